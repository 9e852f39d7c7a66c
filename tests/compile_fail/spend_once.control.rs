// The control: spending a proof once compiles.
pub async fn once(proof: capgate::pipeline::Audited, rt: &capgate::pipeline::Runtime) {
    let forwarded = proof.forward(rt).await;
    let _ = forwarded;
}
