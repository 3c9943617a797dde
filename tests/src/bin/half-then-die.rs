//! A producer that sends one transactional half message and then dies without committing, the way
//! a crashed application would (no shutdown, the connections just drop).
//!
//! Usage: `half-then-die <access-url> <topic> <body>`; prints the message id on stdout.

use rocketmq::Producer;
use rocketmq::conf::{ClientOption, ProducerOption};
use rocketmq::model::message::MessageBuilder;
use rocketmq::model::transaction::{Transaction, TransactionResolution};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, topic, body] = args.as_slice() else {
        eprintln!("usage: half-then-die <access-url> <topic> <body>");
        std::process::exit(2);
    };
    let mut client = ClientOption::default();
    client.set_access_url(url);
    client.set_enable_tls(false);
    let mut option = ProducerOption::default();
    option.set_topics(vec![topic.clone()]);
    let mut producer =
        Producer::new_transaction_producer(option, client, Box::new(|_, _| TransactionResolution::UNKNOWN))
            .expect("producer");
    producer.start().await.expect("start");
    let message =
        MessageBuilder::transaction_message_builder(topic.clone(), body.clone().into_bytes()).build().expect("message");
    let transaction = producer.send_transaction_message(message).await.expect("half message sent");
    println!("{}", transaction.message_id());
    // The local transaction "crashes" here: no commit, no rollback, no shutdown.
    std::process::exit(0);
}
