// expect: error[E0382]
// One proof sends one call, once: forwarding takes it by value.
pub async fn twice(proof: capgate::pipeline::Audited, rt: &capgate::pipeline::Runtime) {
    let _ = proof.forward(rt).await;
    let _ = proof.forward(rt).await;
}
