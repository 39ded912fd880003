//! A model-based, randomized test of the Yjs document actor: simulated y-websocket
//! providers under seeded random schedules, checked against an oracle as they go and at the
//! end.
//!
//! A schedule drives the real actor (behind the real registry, join path and group committer
//! of a [`Docnode`]) over the in-memory store that fences writers and fails on demand
//! ([`MemoryStore`]). Each client is a provider's state machine: a `yrs::Doc` that lives
//! across connections, answering the server's sync step 1 with its step 2, sending each local
//! change as an update while connected, sending its step 1 on every (re)connection. The
//! schedule mixes edits (unique tokens pushed to an array, text typed at random places, map
//! keys), clients that stop reading (so they lag and get caught up, or are closed with 4508),
//! disconnects while others edit (offline edits), store outages, stalls and lost commit
//! answers, and moves to a second owner (a drain).
//!
//! The oracle: after every step, everything a client has seen the server send it is in the
//! store (durable before visible); at the end, once everyone has reconnected and nothing is
//! in flight, every client's document and the stored one are the same, and hold every token
//! any client ever made (nothing sent is lost, offline edits merge).
//!
//! `cargo test -p codraft-docnode --release yjs_model` runs `YJS_MODEL_SCHEDULES` schedules
//! (default 300, stopping after `YJS_MODEL_SECONDS`, default 30) from `YJS_MODEL_SEED`
//! (random by default, printed on failure with the line that replays it).

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use codraft_proto as pb;
use pb::server_frame::Kind;
use rand::{rngs::StdRng, Rng, SeedableRng};
use yrs::{
    sync::{Message, SyncMessage},
    updates::{decoder::Decode, encoder::Encode},
    Array, ArrayRef, GetString, Map, ReadTxn, Text, Transact, Update,
};

use crate::{
    connection::Inbox,
    document::{Command, DocumentHandle},
    store::{
        memory::{Fault, MemoryStore},
        Store,
    },
    Docnode, DocnodeConfig,
};

const DOC: &str = "y:model";

#[derive(Parser)]
struct Settings {
    #[command(flatten)]
    docnode: DocnodeConfig,
}

/// Tiny queues and a short grace, so clients lag, catch up and get closed.
fn config() -> DocnodeConfig {
    config_with(&[])
}

/// The model's settings and `extra` ones.
fn config_with(extra: &[&str]) -> DocnodeConfig {
    let args = [
        "yjs-model",
        "--client-queue=3",
        "--client-queue-kb=1",
        "--slow-client-grace-ms=300",
        "--snapshot-every=7",
        "--idle-unload-secs=60",
        "--sweep-interval-secs=0",
        "--data-dir=/nonexistent",
        "--commit-max-batch=8",
    ];
    match Settings::try_parse_from(args.iter().chain(extra)) {
        Ok(settings) => settings.docnode,
        Err(error) => panic!("model settings do not parse: {error}"),
    }
}

/// A provider's connection.
struct Live {
    owner: usize,
    conn: u64,
    handle: DocumentHandle,
    inbox: Inbox,
    /// Stopped reading (its queue fills).
    stalled: bool,
}

/// A provider: its document outlives its connections.
struct Client {
    doc: yrs::Doc,
    /// Tokens this client pushed.
    tokens: Vec<String>,
    live: Option<Live>,
    /// Everything the server sent this client, applied to an empty document: what it has
    /// seen acknowledged.
    seen: yrs::Doc,
}

struct World {
    rng: StdRng,
    store: Arc<MemoryStore>,
    owners: Vec<Docnode>,
    current: usize,
    clients: Vec<Client>,
    next_conn: u64,
    log: String,
}

fn log_of(doc: &yrs::Doc) -> ArrayRef {
    doc.get_or_insert_array("log")
}

/// The tokens in a document's `log` array, in order.
fn tokens(doc: &yrs::Doc) -> Vec<String> {
    let log = log_of(doc);
    let txn = doc.transact();
    log.iter(&txn).map(|v| v.to_string(&txn)).collect()
}

/// The text of a document's `codemirror` root.
fn text_of(doc: &yrs::Doc) -> String {
    let root = doc.get_or_insert_text("codemirror");
    let txn = doc.transact();
    root.get_string(&txn)
}

/// The stored document: every committed update applied in order.
fn stored(store: &MemoryStore) -> Result<yrs::Doc, String> {
    let doc = yrs::Doc::new();
    {
        let mut txn = doc.transact_mut();
        for (i, part) in store.yjs_updates(DOC).iter().enumerate() {
            let update = Update::decode_v1(part).map_err(|e| format!("stored update {i}: {e}"))?;
            txn.apply_update(update)
                .map_err(|e| format!("stored update {i} does not apply: {e}"))?;
        }
    }
    Ok(doc)
}

fn encode_sync(message: SyncMessage) -> Bytes {
    Bytes::from(Message::Sync(message).encode_v1())
}

impl World {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let store = MemoryStore::new();
        let n = rng.random_range(2..=5);
        let clients = (0..n)
            .map(|_| Client {
                doc: yrs::Doc::new(),
                tokens: Vec::new(),
                live: None,
                seen: yrs::Doc::new(),
            })
            .collect();
        Self {
            rng,
            owners: vec![Docnode::with_store(
                config(),
                Arc::clone(&store) as Arc<dyn Store>,
            )],
            store,
            current: 0,
            clients,
            next_conn: 1,
            log: String::new(),
        }
    }

    fn note(&mut self, line: String) {
        let _ = writeln!(self.log, "{line}");
    }

    /// A provider connects to the current owner and sends its sync step 1.
    async fn connect(&mut self, c: usize) -> Result<(), String> {
        let conn = self.next_conn;
        self.next_conn += 1;
        let open = pb::Open {
            document_id: DOC.to_owned(),
            ..Default::default()
        };
        let owner = self.current;
        let joined = crate::service::join(self.owners[owner].registry(), &open, conn).await;
        let (handle, inbox) = match joined {
            Ok(joined) => joined,
            // The document is unloading behind a stalled store: a provider retries later.
            Err(status) if status.code() == tonic::Code::Unavailable => {
                self.note(format!(
                    "client {c} could not join yet: {}",
                    status.message()
                ));
                return Ok(());
            }
            Err(status) => return Err(format!("client {c} could not join: {status:?}")),
        };
        let step1 = encode_sync(SyncMessage::SyncStep1(
            self.clients[c].doc.transact().state_vector(),
        ));
        let _ = handle
            .send(Command::Yjs {
                conn,
                message: step1,
            })
            .await;
        self.clients[c].live = Some(Live {
            owner,
            conn,
            handle,
            inbox,
            stalled: false,
        });
        self.note(format!(
            "client {c} connects (conn {conn}) to owner {owner}"
        ));
        Ok(())
    }

    async fn disconnect(&mut self, c: usize) {
        if let Some(live) = self.clients[c].live.take() {
            let _ = live.handle.send(Command::Leave { conn: live.conn }).await;
            self.note(format!("client {c} disconnects"));
        }
    }

    /// A local change: a token pushed, sometimes text typed or a key set; sent if connected.
    async fn edit(&mut self, c: usize) {
        let token = format!("c{c}-{}", self.clients[c].tokens.len());
        let at = self.rng.random_range(0..=3u32);
        // Sometimes a key set (which deletes its old value), sometimes text typed.
        let key = self
            .rng
            .random_bool(0.25)
            .then(|| self.rng.random_range(0..4u32));
        let typed = self.rng.random_bool(0.5);
        let client = &mut self.clients[c];
        let before = client.doc.transact().state_vector();
        // Root types first: getting one opens a transaction of its own.
        let (log, text, map) = (
            log_of(&client.doc),
            client.doc.get_or_insert_text("codemirror"),
            client.doc.get_or_insert_map("map"),
        );
        {
            let mut txn = client.doc.transact_mut();
            log.push_back(&mut txn, token.clone());
            let len = text.len(&txn);
            if typed {
                text.insert(&mut txn, at.min(len), "x");
            }
            if let Some(key) = key {
                map.insert(&mut txn, format!("k{key}"), token.clone());
            }
        }
        client.tokens.push(token.clone());
        let update = client.doc.transact().encode_state_as_update_v1(&before);
        if let Some(live) = &client.live {
            let message = encode_sync(SyncMessage::Update(update));
            let _ = live
                .handle
                .send(Command::Yjs {
                    conn: live.conn,
                    message,
                })
                .await;
        }
        self.note(format!("client {c} adds {token}"));
    }

    /// A client reads what the server sent it, answering step 1 with step 2.
    async fn deliver(&mut self, c: usize) -> Result<(), String> {
        let client = &mut self.clients[c];
        let Some(live) = client.live.as_mut() else {
            return Ok(());
        };
        if live.stalled {
            return Ok(());
        }
        let mut replies = Vec::new();
        let mut ended = None;
        loop {
            let frame = match live.inbox.try_next() {
                Ok(frame) => frame,
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                // The actor let the connection go: its reason is the stream's last frame.
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    ended = Some(live.inbox.closed.get().cloned().unwrap_or_default());
                    break;
                }
            };
            match frame.kind {
                Some(Kind::Yjs(bytes)) => {
                    let message = Message::decode_v1(&bytes)
                        .map_err(|e| format!("client {c} got a malformed message: {e}"))?;
                    match message {
                        Message::Sync(SyncMessage::SyncStep1(sv)) => {
                            let diff = client.doc.transact().encode_state_as_update_v1(&sv);
                            replies.push(encode_sync(SyncMessage::SyncStep2(diff)));
                        }
                        Message::Sync(SyncMessage::SyncStep2(u) | SyncMessage::Update(u)) => {
                            for doc in [&client.doc, &client.seen] {
                                let update = Update::decode_v1(&u)
                                    .map_err(|e| format!("client {c}: bad update: {e}"))?;
                                doc.transact_mut()
                                    .apply_update(update)
                                    .map_err(|e| format!("client {c}: update fails: {e}"))?;
                            }
                            // Tokens are unique: one seen twice is a run of items integrated
                            // twice.
                            let all = tokens(&client.doc);
                            let unique: BTreeSet<&String> = all.iter().collect();
                            if unique.len() != all.len() {
                                return Err(format!(
                                    "client {c} holds a token twice after a server message: {all:?}"
                                ));
                            }
                        }
                        _ => {}
                    }
                }
                Some(Kind::Error(error)) => ended = Some(error),
                _ => {}
            }
        }
        let Some(live) = self.clients[c].live.as_ref() else {
            return Ok(());
        };
        let (handle, conn) = (live.handle.clone(), live.conn);
        for message in replies {
            let _ = handle.send(Command::Yjs { conn, message }).await;
        }
        if let Some(error) = ended {
            self.note(format!(
                "client {c} closed: {} {}",
                error.code, error.message
            ));
            self.clients[c].live = None;
        }
        Ok(())
    }

    /// Durable before visible: everything a client was sent is stored.
    fn check_seen_is_stored(&self) -> Result<(), String> {
        let stored: BTreeSet<String> = tokens(&stored(&self.store)?).into_iter().collect();
        for (c, client) in self.clients.iter().enumerate() {
            for token in tokens(&client.seen) {
                if !stored.contains(&token) {
                    return Err(format!("client {c} was sent {token}, which is not stored"));
                }
            }
        }
        Ok(())
    }

    async fn step(&mut self) -> Result<(), String> {
        let c = self.rng.random_range(0..self.clients.len());
        let roll = self.rng.random_range(0..100);
        match roll {
            0..=39 => {
                // Bursts, as typing sends them: each update leaves before the previous one
                // is committed.
                for _ in 0..self.rng.random_range(1..=4) {
                    self.edit(c).await;
                }
            }
            40..=64 => self.deliver(c).await?,
            65..=71 => self.disconnect(c).await,
            72..=79 => {
                if self.clients[c].live.is_none() {
                    self.connect(c).await?;
                }
            }
            80..=84 => {
                if let Some(live) = self.clients[c].live.as_mut() {
                    live.stalled = !live.stalled;
                    let stalled = live.stalled;
                    self.note(format!("client {c} stalled: {stalled}"));
                }
            }
            85..=92 => {
                let fault = match self.rng.random_range(0..4) {
                    0 => Fault::Down,
                    1 => Fault::Stall,
                    2 => Fault::LoseAnswer,
                    _ => Fault::None,
                };
                self.note(format!("store: {fault:?}"));
                self.store.set_fault(fault);
            }
            93..=95 => self.move_owner().await,
            _ => {
                let ms = self.rng.random_range(1..400);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        // Let the actor and the committer run.
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.check_seen_is_stored()
    }

    /// The document moves to another owner (a drain): its clients are told to reroute and
    /// reconnect there.
    async fn move_owner(&mut self) {
        let old = self.current;
        if self.owners.len() < 2 {
            self.owners.push(Docnode::with_store(
                config(),
                Arc::clone(&self.store) as Arc<dyn Store>,
            ));
        }
        self.current = 1 - old;
        self.note(format!(
            "owner {old} releases the document to {}",
            self.current
        ));
        self.store.release();
        if let Some(handle) = self.owners[old].registry().loaded_handle(DOC) {
            let _ = handle.send(Command::Release).await;
        }
    }

    /// Heals everything, reconnects everyone and lets traffic settle; then the oracle.
    async fn finish(&mut self) -> Result<(), String> {
        self.store.release();
        for round in 0..200 {
            for c in 0..self.clients.len() {
                if let Some(live) = self.clients[c].live.as_mut() {
                    live.stalled = false;
                    if live.owner != self.current && round > 20 {
                        self.disconnect(c).await;
                    }
                }
                if self.clients[c].live.is_none() {
                    self.connect(c).await?;
                }
                self.deliver(c).await?;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            if round > 30 && self.converged()? {
                return self.check_seen_is_stored();
            }
        }
        let stored_doc = stored(&self.store)?;
        let stored_tokens = tokens(&stored_doc);
        let mut report = format!(
            "clients did not converge after 200 rounds; stored {} tokens, text {:?}: {stored_tokens:?}",
            stored_tokens.len(),
            text_of(&stored_doc)
        );
        for (c, client) in self.clients.iter().enumerate() {
            let _ = write!(
                report,
                "\nclient {c} (live: {:?}, current owner {}): has {} tokens, text {:?}; made {:?}, has {:?}",
                client.live.as_ref().map(|l| (l.owner, l.conn, l.stalled)),
                self.current,
                tokens(&client.doc).len(),
                text_of(&client.doc),
                client.tokens,
                tokens(&client.doc)
            );
        }
        Err(report)
    }

    /// Every client and the store hold the same tokens, and every token ever made.
    fn converged(&self) -> Result<bool, String> {
        let stored_doc = stored(&self.store)?;
        let stored_tokens = tokens(&stored_doc);
        let made: BTreeSet<&String> = self.clients.iter().flat_map(|c| &c.tokens).collect();
        let have: BTreeSet<&String> = stored_tokens.iter().collect();
        if made != have {
            return Ok(false);
        }
        Ok(self
            .clients
            .iter()
            .all(|c| tokens(&c.doc) == stored_tokens && text_of(&c.doc) == text_of(&stored_doc)))
    }
}

fn run_schedule(seed: u64, steps: usize) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut world = World::new(seed);
        for c in 0..world.clients.len() {
            world.connect(c).await?;
        }
        let mut outcome = Ok(());
        for _ in 0..steps {
            outcome = world.step().await;
            if outcome.is_err() {
                break;
            }
        }
        if outcome.is_ok() {
            outcome = world.finish().await;
        }
        outcome.map_err(|error| {
            let lines: Vec<&str> = world.log.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            format!("{error}\nschedule (seed {seed}), last steps:\n{tail}")
        })
    })
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn yjs_model_schedules_lose_nothing_and_converge() {
    let schedules = env_u64("YJS_MODEL_SCHEDULES").unwrap_or(300);
    let budget = Duration::from_secs(env_u64("YJS_MODEL_SECONDS").unwrap_or(30));
    let first = env_u64("YJS_MODEL_SEED").unwrap_or_else(rand::random);
    let steps = env_u64("YJS_MODEL_STEPS").unwrap_or(120) as usize;
    let started = Instant::now();
    let mut ran = 0;
    for k in 0..schedules {
        let seed = first.wrapping_add(k);
        if let Err(error) = run_schedule(seed, steps) {
            panic!(
                "Yjs model schedule failed after {ran} passed: {error}\n\
                 replay: YJS_MODEL_SEED={seed} YJS_MODEL_SCHEDULES=1 YJS_MODEL_STEPS={steps} \
                 cargo test -p codraft-docnode --release yjs_model"
            );
        }
        ran += 1;
        if started.elapsed() > budget {
            break;
        }
    }
    eprintln!(
        "Yjs model: {ran} schedules of {steps} steps from seed {first} passed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(ran > 0, "no schedule ran");
}

/// Runs `body` on a paused clock, as the schedules do.
fn paused(body: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime")
        .block_on(body);
}

/// Joins connection `conn` to the model document on `node`.
async fn join(node: &Docnode, conn: u64) -> (DocumentHandle, Inbox) {
    let open = pb::Open {
        document_id: DOC.to_owned(),
        ..Default::default()
    };
    crate::service::join(node.registry(), &open, conn)
        .await
        .expect("joins")
}

/// The close a connection got, once the actor let it go (frames before it are skipped).
async fn closed_with(inbox: &mut Inbox) -> pb::Error {
    for _ in 0..100 {
        match inbox.try_next() {
            Ok(_) => continue,
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                return inbox.closed.get().cloned().expect("a close reason")
            }
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    panic!("the connection was not closed");
}

/// An update typing `text` at the start of `doc`'s `codemirror` text.
fn typed(doc: &yrs::Doc, text: &str) -> Bytes {
    let root = doc.get_or_insert_text("codemirror");
    let before = doc.transact().state_vector();
    root.insert(&mut doc.transact_mut(), 0, text);
    encode_sync(SyncMessage::Update(
        doc.transact().encode_state_as_update_v1(&before),
    ))
}

#[test]
fn bad_messages_and_updates_past_the_limits_close_the_client_and_store_nothing() {
    paused(async {
        let store = MemoryStore::new();
        let node = Docnode::with_store(
            config_with(&["--yjs-max-update-kb=1", "--yjs-max-document-kb=3"]),
            Arc::clone(&store) as Arc<dyn Store>,
        );
        let doc = yrs::Doc::new();

        // Not y-protocols: 4400.
        let (handle, mut inbox) = join(&node, 1).await;
        let garbage = Bytes::from_static(&[0, 2, 200, 1]);
        let _ = handle
            .send(Command::Yjs {
                conn: 1,
                message: garbage,
            })
            .await;
        assert_eq!(
            closed_with(&mut inbox).await.code,
            u32::from(crate::document::close::INVALID_MESSAGE)
        );

        // One update over YJS_MAX_UPDATE_KB: 4413.
        let (handle, mut inbox) = join(&node, 2).await;
        let big = typed(&doc, &"x".repeat(1500));
        let _ = handle
            .send(Command::Yjs {
                conn: 2,
                message: big,
            })
            .await;
        let error = closed_with(&mut inbox).await;
        assert_eq!(error.code, u32::from(crate::document::close::TOO_LARGE));
        assert!(
            error.message.contains("update larger than 1 KiB"),
            "{}",
            error.message
        );
        assert!(
            store.yjs_updates(DOC).is_empty(),
            "nothing of a refused update is kept"
        );

        // Updates that fit one by one until the document would pass YJS_MAX_DOCUMENT_KB.
        let writer = yrs::Doc::new();
        let (handle, mut inbox) = join(&node, 3).await;
        for _ in 0..4 {
            let update = typed(&writer, &"y".repeat(900));
            let _ = handle
                .send(Command::Yjs {
                    conn: 3,
                    message: update,
                })
                .await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let error = closed_with(&mut inbox).await;
        assert_eq!(error.code, u32::from(crate::document::close::TOO_LARGE));
        assert!(
            error.message.contains("document larger than 3 KiB"),
            "{}",
            error.message
        );
        let stored: usize = store.yjs_updates(DOC).iter().map(Vec::len).sum();
        assert!(
            (1..=3 * 1024).contains(&stored),
            "the updates that fit are stored and no more: {stored} bytes"
        );
    });
}

#[test]
fn a_lost_commit_answer_is_recognised_and_the_update_still_echoed() {
    paused(async {
        let store = MemoryStore::new();
        let node = Docnode::with_store(config(), Arc::clone(&store) as Arc<dyn Store>);
        let (handle, mut inbox) = join(&node, 1).await;
        let generation = handle.generation();
        store.set_fault(Fault::LoseAnswer);
        let update = typed(&yrs::Doc::new(), "kept");
        let _ = handle
            .send(Command::Yjs {
                conn: 1,
                message: update,
            })
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The retry found the update stored: the same actor echoes it, nothing reloads.
        let mut echoed = false;
        while let Ok(frame) = inbox.try_next() {
            if let Some(Kind::Yjs(bytes)) = frame.kind {
                echoed |= matches!(
                    Message::decode_v1(&bytes),
                    Ok(Message::Sync(SyncMessage::Update(_)))
                );
            }
        }
        assert!(
            echoed,
            "the update came back (closed with {:?})",
            inbox.closed.get()
        );
        let loaded = node.registry().loaded_handle(DOC).map(|h| h.generation());
        assert_eq!(loaded, Some(generation), "the document was not reloaded");
        assert_eq!(store.yjs_updates(DOC).len(), 1, "stored once");
    });
}

#[test]
fn an_update_with_a_gap_is_not_stored_and_its_client_is_asked_to_sync() {
    paused(async {
        let store = MemoryStore::new();
        let node = Docnode::with_store(config(), Arc::clone(&store) as Arc<dyn Store>);
        let (handle, mut inbox) = join(&node, 1).await;
        let client = yrs::Doc::new();
        // The first update never reaches this owner (it went to one that stopped).
        let _lost = typed(&client, "a");
        let second = typed(&client, "b");
        let _ = handle
            .send(Command::Yjs {
                conn: 1,
                message: second,
            })
            .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            store.yjs_updates(DOC).is_empty(),
            "a gapped update is not stored"
        );
        // The client is asked to sync: a step 1 after the greeting's.
        let mut asked = None;
        while let Ok(frame) = inbox.try_next() {
            if let Some(Kind::Yjs(bytes)) = frame.kind {
                if let Ok(Message::Sync(SyncMessage::SyncStep1(sv))) = Message::decode_v1(&bytes) {
                    asked = Some(sv);
                }
            }
        }
        let sv = asked.expect("a sync step 1");
        let step2 = client.transact().encode_state_as_update_v1(&sv);
        let message = encode_sync(SyncMessage::SyncStep2(step2));
        let _ = handle.send(Command::Yjs { conn: 1, message }).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        let stored = stored(&store).expect("stored");
        assert_eq!(
            text_of(&stored),
            text_of(&client),
            "the answer fills the gap"
        );
    });
}
