//! `weirctl demo`: the five scenarios Weir exists for, played against a running broker, each step
//! printed as it happens. The topics and groups come from `crds/examples/demo.yaml`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use weir_proto::rocketmq::v2 as pb;
use weir_proto::weir::admin::v1 as admin;

use crate::client::{self, Ids, Messaging, messaging_as};

const TOPICS: [&str; 6] =
    ["demo-registrations", "demo-payments", "demo-order-events", "demo-flash-sale", "demo-prices", "demo-reminders"];

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Receives (and acks) this run's messages until `want` arrived or `patience` passed without any.
async fn collect(
    client: &mut Messaging,
    group: &str,
    topic: &str,
    run: &str,
    want: usize,
    patience: Duration,
) -> Result<Vec<pb::Message>> {
    let mut got = Vec::new();
    let mut last = Instant::now();
    while got.len() < want && last.elapsed() < patience {
        let messages = client::receive(client, group, topic, "*", 32, Duration::from_secs(2)).await?;
        client::ack(client, group, topic, &messages).await?;
        if !messages.is_empty() {
            last = Instant::now();
        }
        got.extend(messages.into_iter().filter(|m| body(m).starts_with(run)));
    }
    Ok(got)
}

fn body(m: &pb::Message) -> String {
    String::from_utf8_lossy(&m.body).into_owned()
}

/// Runs every scenario; fails if the broker does not behave as each promises.
pub async fn run(server: &str) -> Result<()> {
    let mut admin = client::admin(server).await?;
    let topics = admin.list_topics(admin::ListTopicsRequest {}).await.context("ListTopics")?.into_inner().topics;
    let missing: Vec<&str> = TOPICS.iter().copied().filter(|t| !topics.iter().any(|x| x.name == *t)).collect();
    if !missing.is_empty() {
        bail!(
            "the demo topics {missing:?} are not declared.\nStart the broker with them: \
             weir-sidecar standalone -f crds/examples/demo.yaml"
        );
    }
    let run = format!("run{}", now_ms() % 1_000_000);
    let mut ids = Ids::new();
    println!("Weir demo against {server} (messages tagged {run})\n");

    // 1. Asynchronous decoupling.
    println!("1. Asynchronous decoupling: a registration service sends one durable message and returns;");
    println!("   the mail and SMS services each get it later, at their own pace.");
    let mut registration = messaging_as(server, "demo-registration-service").await?;
    let started = Instant::now();
    let sent = client::send(
        &mut registration,
        vec![client::message("demo-registrations", ids.next(), format!("{run} user alice registered").as_bytes())],
    )
    .await?;
    println!(
        "   sent in {:.2} ms (acknowledged after fdatasync): {}",
        started.elapsed().as_secs_f64() * 1000.0,
        sent[0].message_id
    );
    for (service, group) in [("mail", "demo-mail"), ("SMS", "demo-sms")] {
        let mut c = messaging_as(server, &format!("demo-{service}-service")).await?;
        let got = collect(&mut c, group, "demo-registrations", &run, 1, Duration::from_secs(10)).await?;
        println!("   {service} service (group {group}) received: {}", got.first().map(body).unwrap_or_default());
        if got.len() != 1 {
            bail!("the {service} service did not get the registration");
        }
    }

    // 2. Transactions.
    println!("\n2. Transactional messages: half message, local transaction, then commit or rollback.");
    let mut payments = messaging_as(server, "demo-payment-service").await?;
    let mut outcomes = Vec::new();
    for (order, resolution) in [(42, pb::TransactionResolution::Commit), (43, pb::TransactionResolution::Rollback)] {
        let mut half = client::message("demo-payments", ids.next(), format!("{run} charge order {order}").as_bytes());
        half.system_properties.as_mut().expect("set").message_type = pb::MessageType::Transaction as i32;
        let entry = client::send(&mut payments, vec![half]).await?.remove(0);
        println!(
            "   order {order}: half message stored (transaction {}), invisible to consumers",
            entry.transaction_id
        );
        outcomes.push((order, entry, resolution));
    }
    let mut ledger = messaging_as(server, "demo-ledger").await?;
    let early = collect(&mut ledger, "demo-ledger", "demo-payments", &run, 1, Duration::from_secs(1)).await?;
    println!("   before the outcome, the ledger sees {} message(s)", early.len());
    for (order, entry, resolution) in &outcomes {
        let response = payments
            .end_transaction(pb::EndTransactionRequest {
                topic: client::resource("demo-payments"),
                message_id: entry.message_id.clone(),
                transaction_id: entry.transaction_id.clone(),
                resolution: *resolution as i32,
                source: pb::TransactionSource::SourceClient as i32,
                trace_context: String::new(),
            })
            .await
            .context("EndTransaction")?
            .into_inner();
        client::check(&response.status, "end transaction")?;
        println!(
            "   order {order}: {}",
            if *resolution == pb::TransactionResolution::Commit { "committed" } else { "rolled back" }
        );
    }
    let got = collect(&mut ledger, "demo-ledger", "demo-payments", &run, 2, Duration::from_secs(3)).await?;
    let bodies: Vec<String> = got.iter().map(body).collect();
    println!("   the ledger receives: {bodies:?}");
    if bodies != [format!("{run} charge order 42")] {
        bail!("expected only the committed payment");
    }

    // 3. Ordered messages.
    println!("\n3. Ordered messages: events of one order (the message group) arrive strictly in order, and");
    println!("   the next one is only delivered after the previous one is acknowledged.");
    let mut shop = messaging_as(server, "demo-shop").await?;
    let steps = ["created", "paid", "packed", "shipped"];
    for step in steps {
        for order in ["A", "B", "C"] {
            let mut m =
                client::message("demo-order-events", ids.next(), format!("{run} order {order} {step}").as_bytes());
            let sys = m.system_properties.as_mut().expect("set");
            sys.message_type = pb::MessageType::Fifo as i32;
            sys.message_group = Some(format!("{run}-order-{order}"));
            client::send(&mut shop, vec![m]).await?;
        }
    }
    let mut fulfilment = messaging_as(server, "demo-fulfilment").await?;
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut rounds = 0;
    while seen.values().map(Vec::len).sum::<usize>() < 12 && rounds < 40 {
        rounds += 1;
        let batch =
            client::receive(&mut fulfilment, "demo-fulfilment", "demo-order-events", "*", 32, Duration::from_secs(2))
                .await?;
        let mine: Vec<String> = batch.iter().map(body).filter(|b| b.starts_with(&run)).collect();
        if !mine.is_empty() {
            println!(
                "   one receive returned: {:?}",
                mine.iter().map(|b| b.trim_start_matches(&run).trim()).collect::<Vec<_>>()
            );
        }
        for b in mine {
            let mut words = b.split_whitespace().skip(2);
            let (order, step) =
                (words.next().unwrap_or_default().to_owned(), words.next().unwrap_or_default().to_owned());
            seen.entry(order).or_default().push(step);
        }
        client::ack(&mut fulfilment, "demo-fulfilment", "demo-order-events", &batch).await?;
    }
    for (order, got) in &seen {
        println!("   order {order}: {}", got.join(" -> "));
        if got != &steps {
            bail!("order {order} arrived out of order");
        }
    }

    // 4. Peak shaving.
    println!("\n4. Peak shaving: a flash sale bursts 20,000 orders with no consumer running; the broker keeps");
    println!("   the backlog on disk and the warehouse drains it at its own pace.");
    let mut frontend = messaging_as(server, "demo-frontend").await?;
    let burst = 20_000;
    let started = Instant::now();
    for _ in 0..burst / 500 {
        let batch = (0..500)
            .map(|_| client::message("demo-flash-sale", ids.next(), format!("{run} order").as_bytes()))
            .collect();
        client::send(&mut frontend, batch).await?;
    }
    println!("   burst stored in {:.1} s", started.elapsed().as_secs_f64());
    let lag = |stats: admin::GetStatsResponse| stats.groups.iter().map(|g| g.lag).sum::<u64>();
    let request = || admin::GetStatsRequest { topic: "demo-flash-sale".into(), group: "demo-warehouse".into() };
    println!("   lag of group demo-warehouse: {}", lag(admin.get_stats(request()).await?.into_inner()));
    let mut warehouse = messaging_as(server, "demo-warehouse").await?;
    let started = Instant::now();
    let mut drained = 0;
    while lag(admin.get_stats(request()).await?.into_inner()) > 0 {
        let batch =
            client::receive(&mut warehouse, "demo-warehouse", "demo-flash-sale", "*", 500, Duration::from_secs(2))
                .await?;
        client::ack(&mut warehouse, "demo-warehouse", "demo-flash-sale", &batch).await?;
        drained += batch.len();
        if drained % 5_000 < batch.len() {
            println!("   drained {drained}, lag now {}", lag(admin.get_stats(request()).await?.into_inner()));
        }
    }
    println!("   backlog drained in {:.1} s; lag 0", started.elapsed().as_secs_f64());

    // 5. Broadcast.
    println!("\n5. Broadcast: every price-cache instance receives every price change once.");
    let instances = ["cache-1", "cache-2", "cache-3"];
    let mut caches = Vec::new();
    for instance in instances {
        let mut c = messaging_as(server, &format!("demo-{instance}")).await?;
        // The first receive registers the instance (it starts from the latest price).
        let first = client::receive(&mut c, "demo-price-cache", "demo-prices", "*", 32, Duration::ZERO).await?;
        client::ack(&mut c, "demo-price-cache", "demo-prices", &first).await?;
        caches.push((instance, c));
    }
    let mut pricing = messaging_as(server, "demo-pricing").await?;
    let updates: Vec<pb::Message> = (1..=3)
        .map(|i| client::message("demo-prices", ids.next(), format!("{run} SKU-{i} costs {}.99", 10 * i).as_bytes()))
        .collect();
    client::send(&mut pricing, updates).await?;
    for (instance, c) in caches.iter_mut() {
        let got = collect(c, "demo-price-cache", "demo-prices", &run, 3, Duration::from_secs(5)).await?;
        println!("   {instance} received {} updates: {:?}", got.len(), got.iter().map(body).collect::<Vec<_>>());
        if got.len() != 3 {
            bail!("{instance} missed price updates");
        }
    }

    // Bonus: delayed messages.
    println!("\nAnd delayed messages: a reminder scheduled 2 s ahead arrives after 2 s.");
    let mut m = client::message("demo-reminders", ids.next(), format!("{run} renew your subscription").as_bytes());
    let due = now_ms() + 2000;
    let sys = m.system_properties.as_mut().expect("set");
    sys.message_type = pb::MessageType::Delay as i32;
    sys.delivery_timestamp =
        Some(prost_types::Timestamp { seconds: due / 1000, nanos: ((due % 1000) * 1_000_000) as i32 });
    client::send(&mut pricing, vec![m]).await?;
    let mut reminders = messaging_as(server, "demo-reminder-service").await?;
    let got =
        collect(&mut reminders, "demo-reminder-service", "demo-reminders", &run, 1, Duration::from_secs(10)).await?;
    let late = now_ms() - due;
    println!("   received {:?}, {late} ms after its delivery time", got.first().map(body).unwrap_or_default());
    if got.is_empty() || late < 0 {
        bail!("the reminder did not arrive on time");
    }
    println!("\nAll five scenarios behaved as promised. `weirctl stats` shows the groups the demo used.");
    Ok(())
}
