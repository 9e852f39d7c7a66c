// expect: error[E0616]
// A proof cannot be altered to vouch for another allow record.
pub fn retarget(mut proof: capgate::pipeline::Audited) {
    proof.seq = 7;
}
