#!/usr/bin/env node
// The official TypeScript MCP clients through a running capgate: `@modelcontextprotocol/sdk`
// 1.x (revision 2025-11-25) and `@modelcontextprotocol/client` 2.x pinned to 2026-07-28.
//
// Usage: node ts_clients.mjs sdk1|client2 URL BASE ELICIT_URL
//   URL: the `dev` environment's MCP endpoint; BASE: its origin (for the approvals API);
//   ELICIT_URL: the `stage` environment's, in front of the conformance upstream.
//   Tokens: TOKEN_ONCALL, TOKEN_VIEWER, TOKEN_IC, TOKEN_LEAD (dev), TOKEN_TESTER (stage).
//
// Prints one JSON object with what each step saw; tests/interop.rs asserts on it. Exits
// non-zero only if the client library itself fails.

const [flavour, url, base, elicitUrl] = process.argv.slice(2);

async function library() {
  if (flavour === 'sdk1') {
    const { Client } = await import('@modelcontextprotocol/sdk/client/index.js');
    const { StreamableHTTPClientTransport } = await import('@modelcontextprotocol/sdk/client/streamableHttp.js');
    const { ElicitRequestSchema } = await import('@modelcontextprotocol/sdk/types.js');
    return {
      Client,
      StreamableHTTPClientTransport,
      options: {},
      onElicit: (client, handler) => client.setRequestHandler(ElicitRequestSchema, handler),
    };
  }
  const { Client, StreamableHTTPClientTransport } = await import('@modelcontextprotocol/client');
  return {
    Client,
    StreamableHTTPClientTransport,
    options: { versionNegotiation: { mode: { pin: '2026-07-28' } } },
    onElicit: (client, handler) => client.setRequestHandler('elicitation/create', handler),
  };
}

const lib = await library();

async function session(endpoint, token, steps, { elicit } = {}) {
  const capabilities = elicit ? { elicitation: {} } : {};
  const client = new lib.Client({ name: `capgate-interop-${flavour}`, version: '1.0.0' }, { capabilities, ...lib.options });
  if (elicit) lib.onElicit(client, elicit);
  const transport = new lib.StreamableHTTPClientTransport(new URL(endpoint), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  await client.connect(transport);
  try {
    return await steps(client);
  } finally {
    await client.close();
  }
}

// A JSON-RPC error, as the library reports it, or the result.
async function outcome(promise) {
  try {
    return { result: await promise };
  } catch (e) {
    return { error: String(e?.message ?? e), code: e?.code };
  }
}

const text = (r) => r?.result?.content?.[0]?.text ?? r?.result?.structuredContent ?? r;
const out = { flavour };

await session(url, process.env.TOKEN_ONCALL, async (c) => {
  out.version = c.getNegotiatedProtocolVersion?.() ?? c.transport?.protocolVersion ?? null;
  out.tools = (await c.listTools()).tools.map((t) => t.name).sort();
  out.ok_call = text(await outcome(c.callTool({ name: 'create_ticket', arguments: { title: `from ${flavour}`, severity: 'medium' } })));
  out.bad_args = await outcome(c.callTool({ name: 'create_ticket', arguments: { title: 'x', severity: 'urgent' } }));
  out.forbidden = await outcome(c.callTool({ name: 'create_firewall_block', arguments: { ip: '10.0.0.0/8', ttl_minutes: 5 } }));
  out.prompts = (await c.listPrompts()).prompts.map((p) => p.name);
  const prompt = await outcome(c.getPrompt({ name: 'incident_summary', arguments: { incident: 'INC-9' } }));
  out.prompt = prompt.result?.messages?.[0]?.content?.text ?? prompt;
  const resource = await outcome(c.readResource({ uri: 'runbook://web/restart' }));
  out.resource = resource.result?.contents?.[0]?.text ?? resource;
  out.unknown_resource = await outcome(c.readResource({ uri: 'secrets://vault/root' }));
});

await session(url, process.env.TOKEN_VIEWER, async (c) => {
  out.viewer_tools = (await c.listTools()).tools.map((t) => t.name).sort();
  out.viewer_prompt = await outcome(c.getPrompt({ name: 'incident_summary', arguments: { incident: 'INC-9' } }));
});

// An approval: pending, approved by a security lead in the API, then the identical repeat runs.
const block = { name: 'create_firewall_block', arguments: { ip: '192.0.2.0/24', ttl_minutes: 30 } };
await session(url, process.env.TOKEN_IC, async (c) => {
  const first = await outcome(c.callTool(block));
  out.pending = first.result?.structuredContent ?? first;
  const id = out.pending?.approval_id;
  const decided = await fetch(`${base}/api/approvals/${id}/approve`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${process.env.TOKEN_LEAD}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ reason: `interop ${flavour}` }),
  });
  out.approved = { status: decided.status, body: await decided.json() };
  out.repeat = text(await outcome(c.callTool(block)));
});

// An upstream's elicitation during a call, answered by this client where its revision has
// requests from server to client.
const elicited = [];
await session(
  elicitUrl,
  process.env.TOKEN_TESTER,
  async (c) => {
    const started = Date.now();
    const r = await outcome(c.callTool({ name: 'test_elicitation', arguments: { message: 'Who are you?' } }));
    out.elicitation = { text: text(r) ?? null, error: r.error ?? null, isError: r.result?.isError ?? null, seconds: (Date.now() - started) / 1000 };
  },
  {
    elicit: async (request) => {
      elicited.push(request.params.message);
      return { action: 'accept', content: { username: 'ada', email: 'ada@example.com' } };
    },
  },
);
out.elicited = elicited;

console.log(JSON.stringify(out));
