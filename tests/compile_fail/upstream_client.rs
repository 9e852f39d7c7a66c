// expect: error[E0603]
// The upstream clients are not reachable outside the crate at all.
pub fn direct(client: &capgate::backend::UpstreamClient) {
    let _ = client;
}
