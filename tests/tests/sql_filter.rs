//! SQL92 filters with the official Rust SDK: a consumer group filtering on properties and TAGS
//! receives exactly the matching messages; a malformed expression is ILLEGAL_FILTER_EXPRESSION.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use weir_tests::{Sidecar, sdk};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_filter_selects_by_properties_and_tags() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Sidecar::start(&dir.path().join("data"), &[]).unwrap();
    let url = broker.access_url();
    let producer = sdk::producer(&url, &["quotes"]).await;
    let regions = ["eu", "us", "apac"];
    let mut expected = BTreeSet::new();
    for i in 0..60 {
        let a = i % 10;
        let region = regions[i % 3];
        let tag = if i % 4 == 0 { "Urgent" } else { "Normal" };
        let mut props = HashMap::from([("a", a.to_string()), ("region", region.to_owned())]);
        if i % 5 == 0 {
            props.remove("a"); // a missing property never matches a comparison
        }
        let m = MessageBuilder::builder()
            .set_topic("quotes")
            .set_tag(tag)
            .set_properties(props.clone())
            .set_body(format!("q{i}").into_bytes())
            .build()
            .unwrap();
        producer.send(m).await.unwrap();
        let a_ok = props.get("a").is_some_and(|v| v.parse::<i32>().unwrap() > 5);
        if (a_ok && (region == "eu" || region == "us")) || tag == "Urgent" {
            expected.insert(format!("q{i}"));
        }
    }
    let consumer = sdk::consumer(&url, "pricing", &["quotes"], Duration::from_secs(2)).await;
    let filter = FilterExpression::new(FilterType::Sql, "(a > 5 AND region IN ('eu','us')) OR TAGS = 'Urgent'");
    let mut got = BTreeSet::new();
    let mut empty = 0;
    while empty < 2 {
        let batch = consumer.receive_with("quotes", &filter, 32, Duration::from_secs(30)).await.expect("receive");
        empty = if batch.is_empty() { empty + 1 } else { 0 };
        for m in batch {
            assert!(got.insert(String::from_utf8(m.body().to_vec()).unwrap()), "delivered twice");
            consumer.ack(&m).await.unwrap();
        }
    }
    assert_eq!(got, expected);

    let bad = FilterExpression::new(FilterType::Sql, "a > AND");
    let err = consumer.receive_with("quotes", &bad, 32, Duration::from_secs(30)).await.unwrap_err();
    assert!(format!("{err:?}").contains("ILLEGAL_FILTER_EXPRESSION"), "{err:?}");
}
