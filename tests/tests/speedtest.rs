//! On-demand speed tests between two real agents: one measures the path to the other through the
//! other's blob and sink endpoints, and keeps the result as node samples.

use constella_tests::{Agent, round_trip};

#[test]
fn a_node_measures_the_path_to_another_node_on_demand() {
    let peer = Agent::start("");
    let base = format!("http://{}/api/v1/speedtest", peer.addr);
    let agent = Agent::start(&format!(
        "[history]\nflush_interval = \"200ms\"\n\n[speedtest]\ndownload_url = \"{base}/blob?bytes=5000000\"\n\
         upload_url = \"{base}/sink\"\ntoken = \"{}\"\nupload_bytes = 3000000\n",
        peer.token
    ));
    let (status, report) = agent.post("/api/v1/node/speedtest", None);
    assert_eq!(status, 200, "{report}");
    round_trip::<constella_api::speedtest::RunReport>("speed test report", &report);
    assert_eq!(report["download_bytes"], 5_000_000);
    assert_eq!(report["upload_bytes"], 3_000_000);
    assert!(
        report["download_bps"].as_f64().is_some_and(|b| b > 0.0),
        "{report}"
    );
    assert!(
        report["upload_bps"].as_f64().is_some_and(|b| b > 0.0),
        "{report}"
    );

    let (status, series) = agent.get("/api/v1/node/metrics?series=speedtest&step=1m");
    assert_eq!(status, 200);
    let names: Vec<&str> = series["series"]
        .as_array()
        .expect("series")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["speedtest.download_bps", "speedtest.upload_bps"]);

    // A node without a configured test refuses rather than guessing a target.
    let (status, body) = peer.post("/api/v1/node/speedtest", None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_configured"))
    );
    // The endpoints are authenticated and bounded like the rest of the API.
    assert_eq!(
        peer.request("GET", "/api/v1/speedtest/blob?bytes=10", None, None)
            .0,
        401
    );
    assert_eq!(peer.get("/api/v1/speedtest/blob?bytes=0").0, 400);
    let (status, blob) = peer.get("/api/v1/speedtest/blob?bytes=10");
    assert_eq!(
        (status, blob.as_str().map(str::len)),
        (200, Some(10)),
        "{blob}"
    );
}
