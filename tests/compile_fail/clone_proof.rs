// expect: error[E0599]
// A proof is not `Clone`: it cannot be copied to forward a second time.
pub fn copy(proof: capgate::pipeline::Audited) -> (capgate::pipeline::Audited, capgate::pipeline::Audited) {
    (proof.clone(), proof)
}
