// expect: error[E0616]
// The routes to the upstreams are private to the pipeline: nothing reaches one around it.
pub fn around(rt: &capgate::pipeline::Runtime) {
    let _ = &rt.routes;
}
