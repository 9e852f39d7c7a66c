// expect: cannot construct `Audited` with struct literal syntax due to private fields
// Only the pipeline builds a proof: its fields are private.
pub fn forge() -> capgate::pipeline::Audited {
    capgate::pipeline::Audited { seq: 1 }
}
