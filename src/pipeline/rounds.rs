//! A 2026-07-28 caller's rounds of input (SEP-2322): a 2026-07-28 upstream answers a tool
//! call `input_required`, and the caller, which speaks that revision too, is asked in the
//! gateway's own `input_required` answer and answers by retrying the call.
//!
//! Each of the upstream's requests was decided and recorded before it got here (`asks.rs`,
//! [`crate::backend::relay::Asker::pass`]). The answer's `requestState` is the gateway's:
//! sealed with the same codec and the same binding (caller, environment, tool, argument
//! digest, contract) as a pending approval's, holding the upstream's own state as it gave
//! it, what kind of request each key asked, and the round. On the retry, the state must
//! open for that very call, and `inputResponses` must answer exactly the keys it asked,
//! each read by the types of its kind's result; then the upstream gets its state back byte
//! for byte with the answers. The retry is a call like any other: authenticated, validated,
//! authorized, rate-limited and recorded before it runs.
//!
//! INVARIANT: nothing the caller sends in a retry goes upstream unless the gateway asked for
//! it in this call's previous answer, sealed.

#![allow(
    deprecated,
    reason = "SEP-2577 deprecates sampling and roots for later revisions; 2026-07-28 upstreams still ask for them by rounds"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use rmcp::model::{CreateMessageResult, ElicitResult, InputRequest, InputRequests, InputRequiredResult, InputResponses, ListRootsResult};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Runtime;
use super::validate::ValidatedArgs;
use crate::backend::stateless::{ForCaller, MAX_ROUNDS, Resume};
use crate::contract::ClientAsk;

/// How long a caller has to answer one round: a person may be asked.
const STATE_TTL: Duration = Duration::from_secs(600);

/// What the gateway's `requestState` of one round holds.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InputState {
    /// The upstream's own `requestState`, as it gave it; never read.
    upstream: Option<String>,
    /// What each key asked for.
    asked: BTreeMap<String, ClientAsk>,
    /// Rounds taken so far, this one included.
    round: usize,
}

impl InputState {
    /// A round that asked `asked` (for the fuzz target: a real one is only ever opened).
    #[cfg(any(test, fuzzing))]
    pub(crate) fn asking(asked: BTreeMap<String, ClientAsk>) -> Self {
        Self {
            upstream: Some("upstream state".into()),
            asked,
            round: 1,
        }
    }
}

/// What a repeat's sealed `requestState` was given for.
pub(crate) enum Sealed {
    /// A pending approval's (`approval.rs`): it decides nothing, the store does.
    Approval,
    Input(InputState),
}

impl Sealed {
    /// The opened payload: an approval's holds `approval_id`, a round's `input`.
    pub(crate) fn read(payload: Value) -> Result<Self, String> {
        match payload {
            Value::Object(mut m) => match m.remove("input") {
                Some(input) => InputState::deserialize(input)
                    .map(Self::Input)
                    .map_err(|_| "its payload is not one of a round of input".to_string()),
                None => Ok(Self::Approval),
            },
            _ => Err("its payload is not one this gateway seals".to_string()),
        }
    }
}

/// The gateway's `input_required` answer for a call whose upstream asked `f` in its
/// `round`th round; `Err`: why the call ends instead.
pub(super) fn answer(rt: &Runtime, v: &ValidatedArgs, f: ForCaller, round: usize) -> Result<InputRequiredResult, String> {
    if round > MAX_ROUNDS {
        return Err(format!("the upstream still asked for input after {MAX_ROUNDS} rounds"));
    }
    let mut requests = InputRequests::new();
    for (key, request) in f.asked.requests {
        // Each was read by its method's types when it was passed; this is the same reading.
        let request = InputRequest::deserialize(request).map_err(|_| {
            format!(
                "the upstream's input request `{}` is not well formed",
                crate::request::clean(&key, 64)
            )
        })?;
        requests.insert(key, request);
    }
    let state = InputState {
        upstream: f.asked.state,
        asked: f.kinds,
        round,
    };
    let payload = serde_json::json!({ "input": state });
    let sealed = super::approval::seal_for(rt, v, &payload, STATE_TTL).ok_or("the gateway could not seal the round's requestState")?;
    Ok(InputRequiredResult::new(Some(requests), Some(sealed)))
}

/// A retry's answers to a round.
pub(crate) struct Resumed {
    /// What goes upstream: the answers to keys the round asked, and the upstream's state.
    pub(crate) resume: Resume,
    /// The round they answer.
    pub(crate) round: usize,
    /// Keys answered that the round did not ask: they never go upstream.
    pub(crate) dropped: Vec<String>,
}

/// The retry's answers, checked against what the state asked; `Err`: why they may not go
/// (an answer to an asked key that is not a well-formed result of its kind).
///
/// A key asked and not answered is no error: the upstream gets the answers there are and
/// asks again for the rest (SEP-2322 has a server re-request what is missing). A key
/// answered and not asked is dropped, as the revision has a server ignore it.
pub(crate) fn resume(state: InputState, responses: Option<InputResponses>) -> Result<Resumed, String> {
    let mut answers = Map::new();
    let mut dropped = Vec::new();
    for (key, value) in responses.unwrap_or_default() {
        let Some(&kind) = state.asked.get(&key) else {
            dropped.push(key);
            continue;
        };
        // Read by the result's own types and sent as read: the upstream gets a well-formed
        // answer, never the caller's other members.
        let read = match kind {
            ClientAsk::Sampling => CreateMessageResult::deserialize(&value).and_then(|r| to_value(&r)),
            ClientAsk::Elicitation => ElicitResult::deserialize(&value).and_then(|r| to_value(&r)),
            ClientAsk::Roots => ListRootsResult::deserialize(&value).and_then(|r| to_value(&r)),
        };
        // serde's text would quote the caller's values (what a user typed): the key and
        // the kind say enough, for the caller and for the record.
        let read = read.map_err(|_| {
            format!(
                "its answer to `{}` is not a well-formed `{}` result",
                crate::request::clean(&key, 64),
                kind.word()
            )
        })?;
        answers.insert(key, read);
    }
    Ok(Resumed {
        resume: Resume {
            answers,
            state: state.upstream,
        },
        round: state.round,
        dropped,
    })
}

/// The record's words for answers that were dropped.
pub(super) fn dropped_reason(dropped: &[String]) -> String {
    let keys: Vec<String> = dropped
        .iter()
        .take(8)
        .map(|k| format!("`{}`", crate::request::clean(k, 64)))
        .collect();
    let more = dropped.len().saturating_sub(keys.len());
    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
    format!(
        "inputResponses not asked for in this call's sealed requestState were dropped, not sent upstream: {}{more}",
        keys.join(", ")
    )
}

fn to_value<T: Serialize>(r: &T) -> Result<Value, serde_json::Error> {
    serde_json::to_value(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn asked(pairs: &[(&str, ClientAsk)]) -> InputState {
        let mut s = InputState::asking(pairs.iter().map(|(k, a)| (k.to_string(), *a)).collect());
        s.upstream = Some("up+/=\"é".into());
        s
    }

    fn responses(v: Value) -> Option<InputResponses> {
        Some(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn answers_to_what_was_asked_go_upstream_with_its_state_untouched_and_nothing_else_does() {
        let r = resume(
            asked(&[("who", ClientAsk::Elicitation), ("where", ClientAsk::Roots)]),
            responses(json!({"who": {"action": "accept", "content": {"name": "Ada"}, "extra": 1}, "more": {"action": "decline"}})),
        )
        .unwrap();
        assert_eq!(r.round, 1);
        assert_eq!(r.resume.state.as_deref(), Some("up+/=\"é"));
        assert_eq!(
            Value::Object(r.resume.answers),
            json!({"who": {"action": "accept", "content": {"name": "Ada"}}}),
            "`where` is left for the upstream to ask again; `more` was never asked"
        );
        assert_eq!(r.dropped, ["more"]);
        assert!(dropped_reason(&r.dropped).contains("`more`"));
        let none = resume(asked(&[("who", ClientAsk::Elicitation)]), None).unwrap();
        assert!(none.resume.answers.is_empty() && none.dropped.is_empty());
    }

    #[test]
    fn an_ill_formed_answer_to_an_asked_key_is_refused() {
        let two = || asked(&[("a", ClientAsk::Elicitation), ("b", ClientAsk::Roots)]);
        let ok_a = json!({"action": "decline"});
        let cases = [
            (
                json!({"a": {"action": "maybe"}, "b": {"roots": []}}),
                "not a well-formed `elicitation` result",
            ),
            (json!({"a": ok_a, "b": {"roots": "all"}}), "not a well-formed `roots` result"),
            (json!({"a": 12345}), "not a well-formed `elicitation` result"),
        ];
        for (given, why) in cases {
            let e = resume(two(), responses(given.clone()))
                .err()
                .unwrap_or_else(|| panic!("{given} passed"));
            assert!(e.contains(why), "{e}");
        }
    }

    proptest::proptest! {
        /// Whatever a retry answers: only asked keys go upstream, each as its kind's result
        /// reads it; every other key is dropped; nothing is lost between the two.
        #[test]
        fn only_answers_to_asked_keys_go_upstream(
            keys in proptest::collection::btree_set("[a-d]", 0..5),
            shapes in proptest::collection::vec(0u8..4, 5),
        ) {
            let asked = asked(&[("a", ClientAsk::Elicitation), ("b", ClientAsk::Roots), ("c", ClientAsk::Sampling)]);
            let shape = |i: usize| match shapes[i % shapes.len()] {
                0 => json!({"action": "decline"}),
                1 => json!({"roots": []}),
                2 => json!({"role": "assistant", "content": {"type": "text", "text": "hi"}, "model": "m"}),
                _ => json!(12),
            };
            let given: InputResponses = keys.iter().enumerate().map(|(i, k)| (k.clone(), shape(i))).collect();
            if let Ok(r) = resume(asked, Some(given.clone())) {
                for k in r.resume.answers.keys() {
                    proptest::prop_assert!(["a", "b", "c"].contains(&k.as_str()));
                }
                for k in &r.dropped {
                    proptest::prop_assert_eq!(k.as_str(), "d");
                }
                proptest::prop_assert_eq!(r.resume.answers.len() + r.dropped.len(), given.len());
            }
        }
    }

    #[test]
    fn an_approvals_payload_and_a_rounds_payload_are_told_apart() {
        assert!(matches!(Sealed::read(json!({"approval_id": "x"})), Ok(Sealed::Approval)));
        let state = json!({"input": asked(&[("a", ClientAsk::Sampling)])});
        assert!(matches!(Sealed::read(state), Ok(Sealed::Input(s)) if s.asked.len() == 1));
        assert!(Sealed::read(json!({"input": {"asked": "all"}})).is_err());
        assert!(Sealed::read(json!("text")).is_err());
    }
}
