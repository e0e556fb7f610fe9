//! What tests do to the gateway's database behind its back, on SQLite or on PostgreSQL alike:
//! read every byte it keeps, hold it busy, make the event table's inserts fail.

use std::time::Duration;

use crate::helpers::TestApp;
use crate::postgres_cluster::with_client;

/// Everything the database keeps, as bytes: on SQLite the file and its write-ahead log as they
/// are on disk; on PostgreSQL every row of every table (binary columns as their bytes, the
/// rest as text), as a dump would show them.
pub fn database_bytes(app: &TestApp) -> Vec<u8> {
    match &app.settings.database_url {
        None => sqlite_bytes(app),
        Some(url) => postgres_bytes(url),
    }
}

fn sqlite_bytes(app: &TestApp) -> Vec<u8> {
    let path = app.settings.database_path();
    let mut bytes = std::fs::read(&path).expect("no database file");
    match std::fs::read(path.with_extension("db-wal")) {
        Ok(wal) => bytes.extend(wal),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => panic!("cannot read the WAL: {err}"),
    }
    bytes
}

fn postgres_bytes(url: &str) -> Vec<u8> {
    with_client(url, postgres_rows)
}

fn postgres_rows(client: &mut postgres::Client) -> Vec<u8> {
    let columns = client
        .query(
            "SELECT table_name::TEXT, column_name::TEXT, data_type::TEXT
             FROM information_schema.columns WHERE table_schema = 'public'",
            &[],
        )
        .unwrap();
    let mut bytes = Vec::new();
    for column in columns {
        let (table, name, kind): (String, String, String) =
            (column.get(0), column.get(1), column.get(2));
        if kind == "bytea" {
            let sql = format!("SELECT \"{name}\" FROM \"{table}\"");
            for row in client.query(sql.as_str(), &[]).unwrap() {
                bytes.extend(row.get::<_, Option<Vec<u8>>>(0).unwrap_or_default());
            }
        } else {
            let sql = format!("SELECT \"{name}\"::TEXT FROM \"{table}\"");
            for row in client.query(sql.as_str(), &[]).unwrap() {
                bytes.extend(
                    row.get::<_, Option<String>>(0)
                        .unwrap_or_default()
                        .into_bytes(),
                );
            }
        }
    }
    bytes
}

/// Another connection's write transaction holds the database for `hold` (on PostgreSQL: the
/// tables every run writes, locked exclusively). Returns once the hold has begun; the handle
/// ends when it is let go.
pub async fn hold_writes(app: &TestApp, hold: Duration) -> tokio::task::JoinHandle<()> {
    let (held, is_held) = tokio::sync::oneshot::channel();
    let (path, url) = (
        app.settings.database_path(),
        app.settings.database_url.clone(),
    );
    let holder = tokio::task::spawn_blocking(move || match url {
        None => {
            let connection = rusqlite::Connection::open(path).unwrap();
            connection.busy_timeout(Duration::from_secs(30)).unwrap();
            connection.execute_batch("BEGIN IMMEDIATE").unwrap();
            held.send(()).unwrap();
            std::thread::sleep(hold);
            connection.execute_batch("COMMIT").unwrap();
        }
        Some(url) => {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let mut tx = client.transaction().unwrap();
            tx.batch_execute(
                "LOCK TABLE runs, run_events, twins, state_versions, state_locks IN EXCLUSIVE MODE",
            )
            .unwrap();
            held.send(()).unwrap();
            std::thread::sleep(hold);
            tx.commit().unwrap();
        }
    });
    is_held.await.unwrap();
    holder
}

/// Every insert into the event table fails, with the message a full disk gives, while the
/// rest of the database keeps working; until [`FailingEvents::heal`].
pub struct FailingEvents {
    heal: Box<dyn FnOnce() + Send>,
}

impl FailingEvents {
    pub fn heal(self) {
        (self.heal)();
    }
}

pub fn fail_event_inserts(app: &TestApp) -> FailingEvents {
    match app.settings.database_url.clone() {
        None => {
            let database = rusqlite::Connection::open(app.settings.database_path()).unwrap();
            database.busy_timeout(Duration::from_secs(30)).unwrap();
            database
                .execute_batch(
                    "CREATE TRIGGER simulated_disk_full BEFORE INSERT ON run_events \
                     BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
                )
                .unwrap();
            FailingEvents {
                heal: Box::new(move || {
                    database
                        .execute_batch("DROP TRIGGER simulated_disk_full")
                        .unwrap();
                }),
            }
        }
        Some(url) => {
            with_client(&url, |client| {
                client.batch_execute(
                    "CREATE FUNCTION simulated_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'
                         USING ERRCODE = 'disk_full'; END $$;
                     CREATE TRIGGER simulated_disk_full BEFORE INSERT ON run_events
                         FOR EACH ROW EXECUTE FUNCTION simulated_disk_full();",
                )
            })
            .unwrap();
            FailingEvents {
                heal: Box::new(move || {
                    with_client(&url, |client| {
                        client.batch_execute("DROP TRIGGER simulated_disk_full ON run_events")
                    })
                    .unwrap();
                }),
            }
        }
    }
}
