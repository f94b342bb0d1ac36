//! HTTP ingest and the admin read API: status codes carry the ACK code, bodies are ACKs, `/health`,
//! `/api/stats`, `/api/messages` (metadata only), `/api/messages/{id}/raw`, and the bearer token.

use crate::harness::*;

/// Item 5 and the first "Tests" bullet: every ANS sample POSTed to `/hl7v2` gets 200 with an AA ACK as the
/// body, in the sender's charset, and is journaled with transport `http`.
#[test]
fn every_ans_sample_gets_200_and_aa() {
    for group in groups_without_shared_control_ids(&samples_in("ans")) {
        let relais = Relais::start();
        for file in &group {
            let message = std::fs::read(file).unwrap();
            let response = http()
                .post(format!("{}/hl7v2", relais.http_url()))
                .body(message.clone())
                .send()
                .expect("POST /hl7v2");
            assert_eq!(response.status().as_u16(), 200, "{}", file.display());
            let content_type =
                response.headers()["content-type"].to_str().unwrap().to_ascii_lowercase().replace(' ', "");
            assert!(content_type.contains("charset=utf-8"), "{content_type}");
            let ack = Ack::parse(&response.bytes().unwrap());
            assert_eq!((ack.code(), ack.acked_id()), ("AA".to_string(), msh_field(&message, 10)));
        }
        let listed = relais.messages("", 100);
        assert_eq!(listed.len(), group.len());
        assert!(listed.iter().all(|m| m["transport"] == "http" && m["state"] != "rejected"), "{listed:?}");
    }
}

/// Item 5: AR is 400 and AE is 422, each with the ACK (and its ERR) as the body.
#[test]
fn ar_is_400_and_ae_is_422_with_the_ack_as_body() {
    let relais = Relais::start();
    let (status, body) = relais.post_hl7v2(b"PID|1||123\rPV1|1|I\r");
    assert_eq!(status, 400);
    let ack = Ack::parse(&body);
    assert_eq!(ack.code(), "AR");
    assert_eq!(ack.err_code(), "100");
    assert!(ack.err_location().starts_with("MSH"), "{}", ack.err_location());

    let (status, body) = relais.post_hl7v2(&adt("HTTP-1"));
    assert_eq!((status, Ack::parse(&body).code()), (200, "AA".to_string()));
    let mut changed = adt("HTTP-1");
    changed.extend_from_slice(b"NTE|1||a different message with the same MSH-10\r");
    let (status, body) = relais.post_hl7v2(&changed);
    assert_eq!(status, 422);
    let ack = Ack::parse(&body);
    assert_eq!((ack.code(), ack.err_code()), ("AE".to_string(), "205".to_string()));
}

/// Item 5 and 12: `/health` answers, `/api/stats` counts per state with `journaled` and `rejected`.
#[test]
fn health_and_stats() {
    let relais = Relais::start();
    let (status, body) = relais.get("/health");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["status"], "ok");

    let stats = relais.stats();
    assert_eq!((stats["journaled"], stats["rejected"]), (0, 0));
    relais.post_hl7v2(&adt("S-1"));
    relais.post_hl7v2(&adt("S-2"));
    relais.post_hl7v2(b"not hl7");
    let stats = relais.stats();
    assert_eq!((stats["journaled"], stats["accepted"], stats["rejected"]), (3, 2, 1));
}

/// Item 12: `/api/messages` lists metadata newest first, filters by state, honours `limit`, refuses an
/// unknown state, and never returns a message body or patient data.
#[test]
fn messages_are_metadata_only() {
    let relais = Relais::start();
    let sample = sample("ans/ans-sgl_A03_sortie.er7");
    relais.post_hl7v2(&sample);
    for i in 0..5 {
        relais.post_hl7v2(&adt(&format!("LIST-{i}")));
    }
    relais.post_hl7v2(b"MSH|^~\\&|X\r");

    let all = relais.messages("", 100);
    assert_eq!(all.len(), 7);
    let ids: Vec<u64> = all.iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert_eq!(relais.messages("", 2).len(), 2);
    assert_eq!(relais.accepted(100).len(), 6);
    let rejected = relais.messages("rejected", 100);
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0]["reason"].as_str().is_some_and(|r| !r.is_empty()));

    let (status, _) = relais.get("/api/messages?state=bogus");
    assert_eq!(status, 400);

    let (_, body) = relais.get("/api/messages?limit=100");
    let text = String::from_utf8_lossy(&body);
    for secret in ["PAT-TROIS", "279035121518989", "19790328", "BERNARD", "EVN|", "PID|"] {
        assert!(!text.contains(secret), "`{secret}` in /api/messages: {text}");
    }
}

/// `/api/messages/{id}/raw` gives back the bytes exactly as received; an unknown id is 404.
#[test]
fn raw_message_is_the_bytes_received() {
    let relais = Relais::start();
    let sample = sample("ans/ans-sgl_A03_sortie.er7");
    relais.post_hl7v2(&sample);
    let id = relais.messages("", 1)[0]["id"].as_u64().unwrap();
    let (status, body) = relais.get(&format!("/api/messages/{id}/raw"));
    assert_eq!(status, 200);
    assert_eq!(body, sample);
    let (status, _) = relais.get(&format!("/api/messages/{}/raw", id + 1000));
    assert_eq!(status, 404);
}

/// Item 12: bound beyond loopback, `/api/*` needs the bearer token; ingest and `/health` do not.
#[test]
fn admin_api_needs_the_token_when_bound_beyond_loopback() {
    let relais = Relais::start_with(&[
        ("RELAIS__HTTP__LISTEN", "0.0.0.0:0"),
        ("RELAIS__HTTP__ADMIN_TOKEN", "s3cret-token"),
    ]);
    assert!(relais.http_addr().ip().is_unspecified());
    let (status, body) = relais.post_hl7v2(&adt("TOKEN-1"));
    assert_eq!((status, Ack::parse(&body).code()), (200, "AA".to_string()));
    let client = http();
    let url = relais.http_url();
    assert_eq!(client.get(format!("{url}/health")).send().unwrap().status().as_u16(), 200);

    let id = relais.messages("", 1)[0]["id"].as_u64().unwrap();
    for path in ["/api/stats", "/api/messages?limit=5", &format!("/api/messages/{id}/raw")] {
        let none = client.get(format!("{url}{path}")).send().unwrap();
        assert_eq!(none.status().as_u16(), 401, "{path} without a token");
        let wrong = client.get(format!("{url}{path}")).bearer_auth("s3cret-tokeN").send().unwrap();
        assert_eq!(wrong.status().as_u16(), 401, "{path} with a wrong token");
        let right = client.get(format!("{url}{path}")).bearer_auth("s3cret-token").send().unwrap();
        assert_eq!(right.status().as_u16(), 200, "{path} with the token");
    }
    assert_eq!(relais.stats()["journaled"], 1);
}

/// Item 12: binding the HTTP port beyond loopback without a token is refused at start-up, naming the key.
#[test]
fn beyond_loopback_without_token_does_not_start() {
    let (status, log) = Relais::start_failure(&[("RELAIS__HTTP__LISTEN", "0.0.0.0:0")]);
    assert!(!status.success());
    assert!(log.contains("http.admin_token"), "{log}");
}

/// Item 10 over HTTP: a body over `mllp.max_message_size` gets 400 with an AR (ERR 207) as the body, like an
/// oversize MLLP frame, and its first bytes are journaled as `rejected`; the server keeps serving.
#[test]
fn oversize_body_is_400_with_an_ar_and_kept() {
    let relais = Relais::start_with(&[("RELAIS__MLLP__MAX_MESSAGE_SIZE", "4096")]);
    let mut big = adt("HTTP-BIG");
    big.resize(200_000, b'x');
    let (status, body) = relais.post_hl7v2(&big);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let ack = Ack::parse(&body);
    assert_eq!((ack.code(), ack.err_code(), ack.acked_id()), ("AR".into(), "207".into(), "HTTP-BIG".into()));
    let rejected = relais.messages("rejected", 10);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["size"], 4096);
    assert_eq!(rejected[0]["transport"], "http");
    assert_eq!(relais.post_hl7v2(&adt("HTTP-SMALL")).0, 200);
}
