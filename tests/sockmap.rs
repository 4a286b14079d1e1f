//! TCP mode on the kernel path (`tcp_fastpath: sockmap`): the fast paths' shared checks
//! (`support::fastpath`: echo, half-close, a 1 MB transfer both ways, idle timeout, byte metrics,
//! connection counts, drain and the shutdown cut, reload keeping open connections, a PROXY header
//! first, a client reset) plus the config refusals. Where the kernel refuses the program each test
//! says so and passes.

mod support;

use support::fastpath;

/// The path under test.
const PATH: &str = "sockmap";

#[tokio::test]
async fn a_megabyte_each_way_arrives_whole_with_half_close_and_counted() {
    fastpath::megabyte_each_way(PATH).await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout_not_before() {
    fastpath::idle_timeout(PATH).await;
}

#[tokio::test]
async fn reload_keeps_open_connections_and_shutdown_cuts_them_after_the_grace() {
    fastpath::reload_then_shutdown_cut(PATH).await;
}

#[test]
fn sockmap_is_refused_for_http_and_tls_services() {
    fastpath::refused_for_http_and_tls(PATH);
}

#[tokio::test]
async fn a_handover_drains_an_open_connection_until_it_closes() {
    fastpath::handover_drains(PATH).await;
}

#[tokio::test]
async fn a_proxy_header_goes_first_then_the_kernel_carries_the_stream() {
    fastpath::proxy_header_first(PATH).await;
}

#[tokio::test]
async fn a_client_that_resets_while_the_backend_still_sends_ends_its_connection_at_once() {
    fastpath::client_reset_ends_at_once(PATH).await;
}
