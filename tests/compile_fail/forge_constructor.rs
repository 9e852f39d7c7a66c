// expect: error[E0624]
// The approval store's constructor is the pipeline's own.
pub fn forge() {
    let _ = capgate::pipeline::Audited::released;
}
