//! The store under concurrent writers, as several gateways on one PostgreSQL database (or
//! several threads of one gateway on SQLite) write it: every compare-and-set has exactly one
//! winner, a run's events are numbered without gap or duplicate whoever writes them, a queued
//! run is claimed once, and nothing is appended after a run's end. Each test races real
//! threads on the store of a running gateway; the suite runs on SQLite and on PostgreSQL.

use std::sync::{Arc, Barrier};

use terrastream::clock;
use terrastream::domain::{
    DeploymentStatus, LockChange, NewTwin, Outcome, ReplicaId, RunId, RunKind, StatusMove, TwinId,
    TwinName,
};
use terrastream::store::{
    Appended, NewEvent, NewRun, RunFinish, StateLock, StateVersion, Store, StoredEvent,
};
use terrastream::twins::Twins;

use terrastream::config::Settings;

const RACERS: usize = 16;

/// Runs `racer(i)` on `RACERS` threads released at once; their answers in order.
fn race<T: Send + 'static>(
    store: &Arc<dyn Store>,
    racer: impl Fn(&dyn Store, usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(RACERS));
    let racer = Arc::new(racer);
    let threads: Vec<_> = (0..RACERS)
        .map(|i| {
            let (store, barrier, racer) =
                (Arc::clone(store), Arc::clone(&barrier), Arc::clone(&racer));
            std::thread::spawn(move || {
                barrier.wait();
                racer(store.as_ref(), i)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// A store of its own, with no gateway on it (a gateway would claim what these tests queue),
/// on the suite's database: SQLite in a temporary directory, or a fresh PostgreSQL database.
/// The directory lives as long as the test.
pub fn fresh_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(dir.path());
    settings.database_url = crate::helpers::test_database_url();
    let store =
        crate::postgres_cluster::off_runtime(|| terrastream::store::open(&settings)).unwrap();
    (store, dir)
}

fn new_twin(store: &Arc<dyn Store>, name: &str) -> TwinId {
    let twin = NewTwin {
        id: TwinId::generate(),
        owner: "admin".into(),
        name: TwinName::parse(name).unwrap(),
        provider: "sandbox".parse().unwrap(),
        files: serde_json::from_value(serde_json::json!({ "main.tf": "" })).unwrap(),
        variables: Default::default(),
        secret_variables: Default::default(),
        credential_ids: Vec::new(),
    };
    let store = Arc::clone(store);
    crate::postgres_cluster::off_runtime(move || {
        store.create_twin(twin, &Twins::created("test")).unwrap().id
    })
}

/// A run recorded as a gateway that is not running would: nobody claims or settles it.
fn new_run(store: &Arc<dyn Store>, twin: &TwinId, owner: Option<ReplicaId>) -> RunId {
    let run = NewRun {
        id: RunId::generate(),
        twin_id: twin.clone(),
        kind: RunKind::Plan,
        actor: "test".into(),
        owner,
        secrets: None,
        credentials: Vec::new(),
        log_level: None,
    };
    let store = Arc::clone(store);
    crate::postgres_cluster::off_runtime(move || store.start_run(run, None).unwrap().unwrap().0.id)
}

fn event(run: &RunId, n: usize) -> NewEvent {
    NewEvent {
        run_id: run.clone(),
        event: "log".into(),
        data: format!("{{\"n\":{n}}}"),
    }
}

fn stored(appended: Appended) -> Vec<StoredEvent> {
    match appended {
        Appended::Stored { events, .. } => events,
        Appended::TwinChanged => panic!("no finish was given"),
    }
}

#[test]
fn racing_lockers_of_one_state_leave_exactly_one_holder_and_tell_the_rest_who() {
    let (store, _dir) = fresh_store();
    let twin = new_twin(&store, "locked");
    let id = twin.clone();
    let answers = race(&store, move |s, i| {
        let lock = StateLock {
            lock_id: format!("lock-{i}"),
            info: format!("{{\"ID\":\"lock-{i}\"}}"),
            run_id: None,
            created_at: clock::now(),
        };
        s.acquire_state_lock(&id, &lock).unwrap()
    });
    let winners: Vec<usize> = (0..RACERS).filter(|i| answers[*i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    let holder = format!("lock-{}", winners[0]);
    for answer in &answers {
        if let Err(held) = answer {
            assert_eq!(held.lock_id, holder);
        }
    }
}

#[test]
fn racing_writers_of_the_next_state_version_store_exactly_one() {
    let (store, _dir) = fresh_store();
    let twin = new_twin(&store, "versioned");
    let id = twin.clone();
    let answers = race(&store, move |s, i| {
        let version = StateVersion {
            twin_id: id.clone(),
            version: 1,
            serial: 1,
            lineage: format!("lineage-{i}"),
            md5: "00".into(),
            size: 2,
            resource_count: 0,
            run_id: None,
            actor: format!("writer {i}"),
            created_at: clock::now(),
            ciphertext: vec![u8::try_from(i).unwrap()],
        };
        s.insert_state_version(&version, 0, None).unwrap()
    });
    assert_eq!(answers.iter().filter(|won| **won).count(), 1, "{answers:?}");
    let winner = answers.iter().position(|won| *won).unwrap();
    let store_for_read = Arc::clone(&store);
    let versions = crate::postgres_cluster::off_runtime(move || {
        store_for_read.list_state_versions(&twin).unwrap()
    });
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].actor, format!("writer {winner}"));
}

#[test]
fn racing_moves_decided_from_one_version_of_a_twin_write_exactly_one() {
    let (store, _dir) = fresh_store();
    let twin = new_twin(&store, "moved");
    let reader = Arc::clone(&store);
    let id = twin.clone();
    // Every racer decides from the twin as they all read it.
    let current = crate::postgres_cluster::off_runtime(move || reader.get_twin(&id))
        .unwrap()
        .unwrap();
    let answers = race(&store, move |s, i| {
        let change = StatusMove {
            to: DeploymentStatus::Deploying,
            actor: format!("mover {i}"),
            reason: None,
            lock: LockChange::Acquire(RunId::generate()),
        };
        let decided = current.moved(&change, None, &clock::now()).unwrap();
        s.write_twin(&decided).unwrap().is_some()
    });
    assert_eq!(answers.iter().filter(|won| **won).count(), 1, "{answers:?}");
    let history = crate::postgres_cluster::off_runtime(move || store.history(&twin).unwrap());
    let moves = history
        .iter()
        .filter(|h| h.to_status == Some(DeploymentStatus::Deploying))
        .count();
    assert_eq!(moves, 1, "{history:?}");
}

#[test]
fn gateways_claiming_the_queue_at_once_each_get_a_different_run_and_none_twice() {
    let (store, _dir) = fresh_store();
    let twin = new_twin(&store, "queued");
    let queued: Vec<RunId> = (0..RACERS / 2)
        .map(|_| new_run(&store, &twin, None))
        .collect();
    let answers = race(&store, |s, _| {
        let replica = ReplicaId::generate();
        s.claim_queued_run(&replica)
            .unwrap()
            .map(|run| (run.id, run.owner))
    });
    let mut claimed: Vec<RunId> = answers.iter().flatten().map(|(id, _)| id.clone()).collect();
    claimed.sort();
    let mut expected = queued.clone();
    expected.sort();
    assert_eq!(claimed, expected, "every queued run claimed exactly once");
    for (_, owner) in answers.iter().flatten() {
        assert!(owner.is_some());
    }
    let left = crate::postgres_cluster::off_runtime(move || store.queued_runs().unwrap());
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn writers_of_one_run_at_once_number_its_events_without_gap_or_duplicate() {
    let (store, _dir) = fresh_store();
    let twin = new_twin(&store, "numbered");
    let run = new_run(&store, &twin, Some(ReplicaId::generate()));
    let id = run.clone();
    let (batches, per_batch) = (5, 5);
    let answers = race(&store, move |s, i| {
        (0..batches)
            .map(|batch| {
                let events: Vec<NewEvent> = (0..per_batch)
                    .map(|n| event(&id, i * 1000 + batch * 100 + n))
                    .collect();
                stored(s.append_events(&events, &[], &[], None).unwrap())
            })
            .collect::<Vec<_>>()
    });
    // Each batch's events are numbered one after another, in the order given.
    for batch in answers.iter().flatten() {
        assert_eq!(batch.len(), per_batch);
        for pair in batch.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq + 1, "{pair:?}");
        }
    }
    let per_writer = batches * per_batch;
    let mut numbers: Vec<u64> = answers.iter().flatten().flatten().map(|e| e.seq).collect();
    numbers.sort_unstable();
    let total = u64::try_from(RACERS * per_writer).unwrap();
    assert_eq!(numbers, (1..=total).collect::<Vec<_>>());
    let read = Arc::clone(&store);
    let (last, all) = crate::postgres_cluster::off_runtime(move || {
        (
            read.last_event_seq(&run).unwrap(),
            read.events_after(&run, 0, 10_000).unwrap(),
        )
    });
    assert_eq!(last, total);
    assert_eq!(all.len(), RACERS * per_writer);
}

#[test]
fn nothing_is_appended_after_a_run_ends_whoever_tries() {
    let (store, _dir) = fresh_store();
    let twin = new_twin(&store, "ended");
    let run = new_run(&store, &twin, Some(ReplicaId::generate()));
    let finish = RunFinish {
        run_id: run.clone(),
        twin_id: twin.clone(),
        outcome: Outcome::Failed,
        exit_code: None,
        error: Some("settled by another gateway".into()),
        message: "plan failed: settled by another gateway".into(),
        outputs: None,
        twin: None,
        result: None,
        ended_at: clock::now(),
        delete_credentials: Vec::new(),
        messages: Vec::new(),
    };
    let (ended, late_finish) = {
        let (store, run) = (Arc::clone(&store), run.clone());
        crate::postgres_cluster::off_runtime(move || {
            let done = NewEvent {
                run_id: run.clone(),
                event: "done".into(),
                data: "{}".into(),
            };
            let first = store
                .append_events(&[event(&run, 1), done.clone()], &[], &[], Some(&finish))
                .unwrap();
            assert_eq!(stored(first).len(), 2);
            // The gateway that ran it, back from a pause, still writing.
            let late = store
                .append_events(&[event(&run, 2)], &[], &[], None)
                .unwrap();
            let mut again = finish.clone();
            again.outcome = Outcome::Succeeded;
            let late_finish = store
                .append_events(&[done], &[], &[], Some(&again))
                .unwrap();
            (late, late_finish)
        })
    };
    for appended in [ended, late_finish] {
        match appended {
            Appended::Stored { events, ended } => {
                assert!(events.is_empty(), "{events:?}");
                assert_eq!(ended, std::slice::from_ref(&run));
            }
            Appended::TwinChanged => panic!("no twin change was given"),
        }
    }
    let read = Arc::clone(&store);
    let id = run.clone();
    let (events, stored_run) = crate::postgres_cluster::off_runtime(move || {
        (
            read.events_after(&id, 0, 100).unwrap(),
            read.get_run(&id).unwrap().unwrap(),
        )
    });
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].event, "done");
    assert_eq!(stored_run.status.as_str(), "failed");
}

#[test]
fn a_run_is_taken_from_its_gateway_only_after_the_gateway_falls_silent() {
    let (store, _dir) = fresh_store();
    let twin = new_twin(&store, "owned");
    let (alive, silent, taker) = (
        ReplicaId::generate(),
        ReplicaId::generate(),
        ReplicaId::generate(),
    );
    let kept = new_run(&store, &twin, Some(alive.clone()));
    let lost = new_run(&store, &twin, Some(silent.clone()));
    let never_seen = new_run(&store, &twin, Some(ReplicaId::generate()));
    let expected_owner = taker.clone();
    let answers = crate::postgres_cluster::off_runtime(move || {
        store.heartbeat(&alive, "http://alive").unwrap();
        store.heartbeat(&silent, "http://silent").unwrap();
        // Silent for longer than a (short) lease; the live one beats again just before.
        std::thread::sleep(std::time::Duration::from_secs(3));
        store.heartbeat(&alive, "http://alive").unwrap();
        let lease = Some(2.5);
        let kept_taken = store
            .move_run(&kept, Some(&alive), Some(&taker), lease)
            .unwrap();
        let lost_taken = store
            .move_run(&lost, Some(&silent), Some(&taker), lease)
            .unwrap();
        let again = store
            .move_run(&lost, Some(&silent), Some(&taker), lease)
            .unwrap();
        let unknown = store.get_run(&never_seen).unwrap().unwrap();
        let unknown_taken = store
            .move_run(&never_seen, unknown.owner.as_ref(), Some(&taker), lease)
            .unwrap();
        (
            kept_taken,
            lost_taken,
            again,
            unknown_taken,
            store.get_run(&lost).unwrap().unwrap().owner,
        )
    });
    let (kept_taken, lost_taken, again, unknown_taken, owner) = answers;
    assert!(!kept_taken, "a live gateway's run was taken");
    assert!(lost_taken, "a silent gateway's run was not taken");
    assert!(!again, "a run was taken twice");
    assert!(
        unknown_taken,
        "a run of a gateway never seen alive was not taken"
    );
    assert_eq!(owner, Some(expected_owner));
}

/// `count` stores on one fresh database, as that many gateways open it.
fn stores_on_one_database(count: usize) -> (Vec<Arc<dyn Store>>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(dir.path());
    settings.database_url = crate::helpers::test_database_url();
    let stores = (0..count)
        .map(|_| {
            crate::postgres_cluster::off_runtime(|| terrastream::store::open(&settings)).unwrap()
        })
        .collect();
    (stores, dir)
}

#[test]
fn one_gateway_leads_a_task_and_another_only_once_its_lease_has_ended() {
    use std::time::{Duration, Instant};
    let (stores, _dir) = stores_on_one_database(2);
    let minute = Duration::from_secs(60);
    let (first, second) = (Arc::clone(&stores[0]), Arc::clone(&stores[1]));
    // Both gateways' threads at once: one gateway leads, all of its calls say so.
    let answers = race(&first, {
        let second = Arc::clone(&second);
        move |first, i| {
            let store = if i % 2 == 0 { first } else { second.as_ref() };
            (i % 2, store.try_lead("drift", minute).unwrap())
        }
    });
    let leaders: std::collections::BTreeSet<usize> = answers
        .iter()
        .filter(|(_, leads)| *leads)
        .map(|(who, _)| *who)
        .collect();
    assert_eq!(leaders.len(), 1, "{answers:?}");
    let winner = *leaders.iter().next().unwrap();
    assert!(
        answers
            .iter()
            .all(|(who, leads)| *leads == (*who == winner)),
        "{answers:?}"
    );
    let (leader, other) = if winner == 0 {
        (first, second)
    } else {
        (second, first)
    };
    crate::postgres_cluster::off_runtime(move || {
        // Another task is led on its own.
        assert!(other.try_lead("another task", minute).unwrap());
        // The leader renews with a short lease and stops renewing (as a lost gateway does):
        // the other one takes over once it has ended, and then keeps it.
        assert!(leader
            .try_lead("drift", Duration::from_millis(200))
            .unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        while !other.try_lead("drift", minute).unwrap() {
            assert!(Instant::now() < deadline, "the lease never ended");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!leader.try_lead("drift", minute).unwrap());
        assert!(other.try_lead("drift", minute).unwrap());
    });
}

#[test]
fn a_message_is_handed_out_once_and_a_due_delivery_claimed_by_one_racing_worker() {
    use terrastream::domain::{DeliveryId, WebhookId};
    use terrastream::store::{NewDelivery, StoredWebhook};
    let (store, _dir) = fresh_store();
    let twin_id = new_twin(&store, "hooked");
    let hook = StoredWebhook {
        id: WebhookId::generate(),
        owner: "admin".into(),
        is_admin: true,
        url: "https://receiver.test/".into(),
        events: Vec::new(),
        description: None,
        sealed_secret: vec![7],
        created_at: "2000-01-01T00:00:00.000000Z".into(),
    };
    let message = {
        let (store, hook) = (Arc::clone(&store), hook.clone());
        crate::postgres_cluster::off_runtime(move || {
            store.insert_webhook(&hook).unwrap();
            let twin = store.get_twin(&twin_id).unwrap().unwrap();
            let deleted = twin.soft_deleted("admin", &clock::now()).unwrap();
            store.write_twin(&deleted).unwrap().unwrap();
            store.pending_messages(10).unwrap().remove(0)
        })
    };
    let handed = race(&store, {
        let (message, hook) = (message.clone(), hook.clone());
        move |store, _| {
            let delivery = NewDelivery {
                id: DeliveryId::generate(),
                webhook_id: hook.id.clone(),
                next_attempt_at: "2000-01-01T00:00:00.000000Z".into(),
            };
            store.fan_out_message(&message.id, &[delivery]).unwrap()
        }
    });
    assert_eq!(handed.iter().filter(|h| **h).count(), 1, "{handed:?}");
    let claimed = race(&store, |store, i| {
        store
            .claim_deliveries(
                &format!("worker-{i}"),
                "2030-01-01T00:00:00.000000Z",
                "2030-01-01T00:00:30.000000Z",
                10,
            )
            .unwrap()
            .len()
    });
    assert_eq!(claimed.iter().sum::<usize>(), 1, "{claimed:?}");
    let records =
        crate::postgres_cluster::off_runtime(move || store.list_deliveries(&hook.id, 10).unwrap());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status.as_str(), "sending");
}
