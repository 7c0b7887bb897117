//! The fuzzer builds and runs in CI: a fixed seed and a bounded number of inputs (the long
//! runs are `cargo run --release -p linger-fuzz -- --seconds N`).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_run_finds_nothing() {
    assert!(linger_fuzz::corpus_decodes(), "the corpus must start valid");
    let daemon = linger_fuzz::DaemonUnderTest::start()
        .await
        .expect("a daemon in a temporary directory");
    // The login entry of the corpus, unmutated, reaches the signature check over "TLS".
    let login = linger_fuzz::corpus()[0].clone();
    assert!(daemon.handshake_target(login, Some(0x0a00_0001)).await);
    let audit = daemon.audit_log();
    assert!(
        audit.contains("login_failed") && audit.contains("does not verify"),
        "{audit}"
    );
    let found = linger_fuzz::run(0x5eed, 5_000, 25, &daemon).await;
    assert_eq!(found.decode_runs, 5_000);
    assert!(found.handshake_runs >= 200);
    assert!(
        found.crashes.is_empty(),
        "inputs that panicked: {:?}",
        found.crashes
    );
}
