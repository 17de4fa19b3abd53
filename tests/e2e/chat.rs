//! The support bot end to end: a scripted conversation that goes through every intent with the
//! patient's live payments, a disputed charge landing in review with its transcript, a hand-off
//! after which the bot is silent, another patient who never sees a word of this one's payments,
//! and the WebSocket.

use crate::on_both_engines;
use crate::support::{Engine, Patient, TestApp, pay, payment_body};
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

async fn open(app: &TestApp, patient: &Patient) -> String {
    let (status, body) = app.request(Method::POST, "/v1/chat/conversations", Some(&patient.token), None, None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body["greeting"].as_str().unwrap().starts_with("Olá"));
    body["id"].as_str().unwrap().to_owned()
}

async fn say(app: &TestApp, patient: &Patient, conversation: &str, text: &str) -> Value {
    let path = format!("/v1/chat/conversations/{conversation}/messages");
    let (status, body) =
        app.request(Method::POST, &path, Some(&patient.token), Some(&json!({"text": text})), None).await;
    assert_eq!(status, StatusCode::OK, "{text}: {body}");
    body
}

/// Says `text` and checks what the bot understood; returns its reply.
async fn expect(app: &TestApp, patient: &Patient, conversation: &str, text: &str, intent: &str) -> String {
    let body = say(app, patient, conversation, text).await;
    assert_eq!(body["intent"], intent, "{text:?} was read as {body}");
    let reply = body["reply"].as_str().unwrap().to_owned();
    assert!(!reply.is_empty());
    reply
}

async fn a_patient_talks_with_the_bot_about_their_own_payments(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let provider = app.provider(json!({"fee_bps": 500, "escrow": true})).await;
    let maria = app.patient(&provider).await;
    let created = pay(&app, &provider, &payment_body(&provider, &maria, 150_000)).await;
    assert_eq!(created["status"], "awaiting_payment", "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let short = &id[..8];
    let code = created["charge"]["pix_br_code"].as_str().unwrap().to_owned();
    let chat = open(&app, &maria).await;

    let hello = expect(&app, &maria, &chat, "oi, bom dia", "greeting").await;
    assert!(hello.contains("Como posso ajudar"), "{hello}");
    let status = expect(&app, &maria, &chat, "já caiu meu pix?", "payment_status").await;
    assert!(status.contains(short) && status.contains("aguardando o seu pagamento"), "{status}");
    assert!(status.contains("R$ 1.500,00"), "{status}");
    let copy = expect(&app, &maria, &chat, "preciso da segunda via do pix", "second_copy").await;
    assert!(copy.contains(&code), "the BR Code of the open charge: {copy}");

    // The patient pays; the bot sees it at once.
    let charge = created["charge"]["id"].as_str().unwrap();
    let paid = app.client.post(format!("{}/sandbox/charges/{charge}/pay", app.celcoin)).send().await.unwrap();
    assert_eq!(paid.status(), StatusCode::NO_CONTENT);
    for _ in 0..200 {
        let (_, payment) =
            app.request(Method::GET, &format!("/v1/payments/{id}"), Some(&provider.key), None, None).await;
        if payment["status"] == "held_in_escrow" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = expect(&app, &maria, &chat, "e agora, ja caiu?", "payment_status").await;
    assert!(status.contains("retido em custódia"), "{status}");
    let escrow = expect(&app, &maria, &chat, "quando a clínica recebe?", "escrow_release").await;
    assert!(escrow.contains("confirmar que o procedimento aconteceu"), "{escrow}");

    // A simulation, then "e em 10x?" carries the amount over.
    let six = expect(&app, &maria, &chat, "quanto fica 1500 em 6x?", "installment_simulation").await;
    assert!(six.starts_with("R$ 1.500,00 em 6x"), "{six}");
    let ten = expect(&app, &maria, &chat, "e em 10x?", "installment_simulation").await;
    assert!(ten.starts_with("R$ 1.500,00 em 10x"), "{ten}");
    let plan = medpay_models::InstallmentPlan::price(medpay_models::PlanRequest {
        principal: medpay_models::Money::from_centavos(150_000),
        count: 10,
        monthly_interest: medpay_models::BasisPoints(medpay_chatbot::dialogue::DEFAULT_MONTHLY_INTEREST_BPS),
        released_on: chrono::Utc::now().date_naive(),
    })
    .unwrap();
    let installment = medpay_models::Money::from_centavos(plan.installments[0].amount_centavos).brl();
    assert!(ten.contains(&installment), "the payment core's own schedule ({installment}): {ten}");

    let methods = expect(&app, &maria, &chat, "quais as formas de pagamento?", "payment_methods").await;
    assert!(methods.contains("PIX") && methods.contains("boleto"), "{methods}");
    expect(&app, &maria, &chat, "quero cancelar e pedir reembolso", "refund_cancellation").await;
    let lgpd = expect(&app, &maria, &chat, "quero apagar meus dados", "lgpd").await;
    assert!(lgpd.contains("LGPD"), "{lgpd}");
    expect(&app, &maria, &chat, "qual a previsão do tempo amanhã?", "out_of_scope").await;

    // "Não reconheço esta cobrança": the payment goes to review with this conversation.
    let dispute = expect(&app, &maria, &chat, "não reconheço esta cobrança", "not_recognized").await;
    assert!(dispute.contains(short) && dispute.contains("análise"), "{dispute}");
    let (status, reviews) = app.request(Method::GET, "/v1/reviews", Some(&app.analyst), None, None).await;
    assert_eq!(status, StatusCode::OK, "{reviews}");
    let case =
        reviews["data"].as_array().unwrap().iter().find(|case| case["payment"]["id"] == id.as_str()).expect("a case");
    assert_eq!(case["reason"], "patient_disputed");
    let transcript: Vec<&str> =
        case["conversation"]["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert!(transcript.contains(&"não reconheço esta cobrança"), "{transcript:?}");
    let (_, events) =
        app.request(Method::GET, &format!("/v1/payments/{id}/events"), Some(&provider.key), None, None).await;
    assert!(events["data"].as_array().unwrap().iter().any(|e| e["type"] == "payment.disputed"), "the provider is told");
    expect(&app, &maria, &chat, "ok, obrigada, tchau", "goodbye").await;

    // A hand-off: the bot says so once, then stays silent; the person sees everything.
    let second = open(&app, &maria).await;
    let handoff = say(&app, &maria, &second, "quero falar com alguém").await;
    assert_eq!((handoff["intent"].as_str(), handoff["handed_off"].as_bool()), (Some("human"), Some(true)), "{handoff}");
    for text in ["oi? tem alguém aí?", "quanto fica em 6x?"] {
        let silent = say(&app, &maria, &second, text).await;
        assert!(
            silent["reply"].is_null() && silent["handed_off"] == true,
            "the bot is silent after a hand-off: {silent}"
        );
    }
    let (status, handoffs) = app.request(Method::GET, "/v1/chat/handoffs", Some(&app.analyst), None, None).await;
    assert_eq!(status, StatusCode::OK);
    let taken =
        handoffs["data"].as_array().unwrap().iter().find(|h| h["conversation"]["id"] == second.as_str()).unwrap();
    let texts: Vec<&str> =
        taken["conversation"]["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts.iter().filter(|text| **text == "quanto fica em 6x?").count(), 1, "kept for the person: {texts:?}");
    assert!(
        taken["payments"].as_array().unwrap().iter().any(|p| p["id"] == id.as_str()),
        "with the patient's payments"
    );
    let (status, _) = app.request(Method::GET, "/v1/chat/handoffs", Some(&maria.token), None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The person answers in the same conversation; Maria reads it in her transcript.
    let agent_path = format!("/v1/chat/conversations/{second}/agent-messages");
    let answer = json!({"text": "Olá, Maria! Sou a Júlia, da equipe MedPay. Como posso ajudar?"});
    let (status, _) = app.request(Method::POST, &agent_path, Some(&maria.token), Some(&answer), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only people of the team answer as agents");
    let (status, sent) = app.request(Method::POST, &agent_path, Some(&app.analyst), Some(&answer), None).await;
    assert_eq!((status, sent["role"].as_str()), (StatusCode::CREATED, Some("agent")), "{sent}");
    let (_, transcript) =
        app.request(Method::GET, &format!("/v1/chat/conversations/{second}"), Some(&maria.token), None, None).await;
    let last = transcript["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["role"].as_str(), last["text"].as_str()), (Some("agent"), answer["text"].as_str()));
    let (status, body) = app
        .request(
            Method::POST,
            &format!("/v1/chat/conversations/{chat}/agent-messages"),
            Some(&app.analyst),
            Some(&answer),
            None,
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_handed_off")));

    // Not understood: the bot asks to rephrase, and the second time calls a person.
    let third = open(&app, &maria).await;
    let unsure = say(&app, &maria, &third, "banana").await;
    assert_eq!((unsure["intent"].as_str(), unsure["handed_off"].as_bool()), (Some("unsure"), Some(false)), "{unsure}");
    assert!(unsure["reply"].as_str().unwrap().contains("de outro jeito"), "{unsure}");
    let gave_up = say(&app, &maria, &third, "sei la").await;
    assert_eq!(gave_up["handed_off"], true, "{gave_up}");
    assert!(say(&app, &maria, &third, "alô?").await["reply"].is_null());

    // Another patient never sees a word of Maria's payments.
    let joao = app.patient(&provider).await;
    let theirs = open(&app, &joao).await;
    for (text, intent) in [
        ("já caiu meu pix?", "payment_status"),
        ("preciso da segunda via do pix", "second_copy"),
        (&format!("status do pagamento {short}") as &str, "payment_status"),
        ("não reconheço esta cobrança", "not_recognized"),
    ] {
        let body = say(&app, &joao, &theirs, text).await;
        let reply = body["reply"].as_str().unwrap_or_default();
        assert!(!reply.contains(short) && !reply.contains("1.500,00") && !reply.contains(&code), "{intent}: {reply}");
    }
    let path = format!("/v1/chat/conversations/{chat}");
    let (status, _) = app.request(Method::GET, &path, Some(&joao.token), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not Maria's transcript");
    let (status, _) = app
        .request(Method::POST, &format!("{path}/messages"), Some(&joao.token), Some(&json!({"text": "oi"})), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not in Maria's conversation");
    let (status, _) = app.request(Method::POST, "/v1/chat/conversations", Some(&provider.key), None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the chat is the patients'");
    let (status, body) = app
        .request(
            Method::POST,
            &format!("/v1/chat/conversations/{theirs}/messages"),
            Some(&joao.token),
            Some(&json!({"text": "  "})),
            None,
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_message")));

    // The same bot over a WebSocket.
    let url = format!("{}/v1/chat/ws", app.base.replace("http://", "ws://"));
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {}", maria.token).parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let hello: Value = serde_json::from_str(socket.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert!(hello["conversation_id"].is_string());
    socket.send(tokio_tungstenite::tungstenite::Message::Text("quanto fica 2000 em 4x?".into())).await.unwrap();
    let answer: Value = serde_json::from_str(socket.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(answer["intent"], "installment_simulation", "{answer}");
    assert!(answer["reply"].as_str().unwrap().starts_with("R$ 2.000,00 em 4x"), "{answer}");
    app.stop().await;
}
on_both_engines!(a_patient_talks_with_the_bot_about_their_own_payments);

/// A dispute of an unpaid charge, upheld: the payment is cancelled and its charge is no longer
/// ours. When the patient pays the cancelled charge anyway, the ledger does not take the money and
/// the reconciliation with Celcoin reports the difference. A rejected dispute changes nothing.
async fn an_upheld_dispute_cancels_an_unpaid_charge_and_reconciliation_sees_a_late_payment(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let provider = app.provider(json!({"fee_bps": 300})).await;
    let ana = app.patient(&provider).await;
    let first = pay(&app, &provider, &payment_body(&provider, &ana, 20_000)).await;
    let chat = open(&app, &ana).await;
    expect(&app, &ana, &chat, "não reconheço esta cobrança", "not_recognized").await;
    let (_, reviews) = app.request(Method::GET, "/v1/reviews", Some(&app.analyst), None, None).await;
    let case = reviews["data"].as_array().unwrap().iter().find(|c| c["payment"]["id"] == first["id"]).unwrap().clone();
    let path = format!("/v1/reviews/{}", case["id"].as_str().unwrap());
    let (status, body) = app
        .request(Method::POST, &path, Some(&app.analyst), Some(&json!({"outcome": "maybe", "note": "?"})), None)
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_outcome")));
    let verdict = json!({"outcome": "upheld", "note": "cobrança indevida"});
    let (status, closed) = app.request(Method::POST, &path, Some(&app.analyst), Some(&verdict), None).await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    assert_eq!(
        (closed["status"].as_str(), closed["charge"]["status"].as_str()),
        (Some("cancelled"), Some("cancelled"))
    );

    // The patient pays the cancelled PIX anyway: the money is at Celcoin, not in our ledger.
    let charge = first["charge"]["id"].as_str().unwrap();
    app.client.post(format!("{}/sandbox/charges/{charge}/pay", app.celcoin)).send().await.unwrap();
    let mut report = Value::Null;
    for _ in 0..100 {
        let (_, body) = app.request(Method::GET, "/v1/ledger/reconciliation", Some(&app.admin), None, None).await;
        report = body;
        if report["ok"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(report["ok"], false, "{report}");
    let difference = report["differences"][0]["difference"].as_str().unwrap();
    assert!(difference.contains("paid 20000 at Celcoin, 0 here"), "{report}");
    // Nor dropped: the money is in suspense, with a case for a person.
    let mut check = Value::Null;
    for _ in 0..100 {
        check = app.request(Method::GET, "/v1/ledger/check", Some(&app.admin), None, None).await.1;
        if check["suspense_centavos"] == 20_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((check["ok"].as_bool(), check["suspense_centavos"].as_i64()), (Some(true), Some(20_000)), "{check}");
    let (_, reviews) = app.request(Method::GET, "/v1/reviews", Some(&app.analyst), None, None).await;
    let unexpected = reviews["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["payment"]["id"] == first["id"] && c["reason"] == "unexpected_money");
    assert!(unexpected, "{reviews}");

    // A dispute the analyst rejects leaves the payment as it was.
    let second = pay(&app, &provider, &payment_body(&provider, &ana, 30_000)).await;
    let short = &second["id"].as_str().unwrap()[..8];
    expect(&app, &ana, &chat, &format!("não reconheço a cobrança {short}"), "not_recognized").await;
    let (_, reviews) = app.request(Method::GET, "/v1/reviews", Some(&app.analyst), None, None).await;
    let case = reviews["data"].as_array().unwrap().iter().find(|c| c["payment"]["id"] == second["id"]).unwrap().clone();
    let path = format!("/v1/reviews/{}", case["id"].as_str().unwrap());
    let verdict = json!({"outcome": "rejected", "note": "a paciente confirmou depois"});
    let (status, kept) = app.request(Method::POST, &path, Some(&app.analyst), Some(&verdict), None).await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    assert_eq!(kept["status"], "awaiting_payment");
    app.stop().await;
}
on_both_engines!(an_upheld_dispute_cancels_an_unpaid_charge_and_reconciliation_sees_a_late_payment);

/// The WebSockets are bounded: a chat message over 4 KiB closes the chat socket (1009, message too
/// big) and a quiet one is closed after the idle limit (4008); the event stream takes no frame over
/// 1 KiB from its subscriber either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_close_on_oversized_frames_and_idleness() {
    use tokio_tungstenite::tungstenite::Message as Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let app = TestApp::spawn_with(Engine::Sqlite, |config| config.limits.websocket_idle_ms = 700).await;
    let provider = app.provider(json!({})).await;
    let maria = app.patient(&provider).await;
    let open_socket = |path: &str, token: &str| {
        let url = format!("{}{path}", app.base.replace("http://", "ws://"));
        let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        async move { tokio_tungstenite::connect_async(request).await.unwrap().0 }
    };
    // The close frame the server ends with (or none, when it just drops the connection).
    async fn closing(
        socket: &mut (impl futures::Stream<Item = Result<Frame, tokio_tungstenite::tungstenite::Error>> + Unpin),
    ) -> Option<CloseCode> {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("closed within 10 s") {
                Some(Ok(Frame::Close(frame))) => return frame.map(|frame| frame.code),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    let mut chat = open_socket("/v1/chat/ws", &maria.token).await;
    let hello = chat.next().await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("conversation_id"));
    // Under the limit: answered.
    chat.send(Frame::Text("quanto fica 2000 em 4x?".into())).await.unwrap();
    let answer: Value = serde_json::from_str(chat.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(answer["intent"], "installment_simulation", "{answer}");
    // Over it: closed, with nothing answered.
    chat.send(Frame::Text("a".repeat(5_000).into())).await.unwrap();
    assert_eq!(closing(&mut chat).await, Some(CloseCode::Size), "1009: message too big");

    // Quiet past the idle limit: closed with 4008.
    let mut quiet = open_socket("/v1/chat/ws", &maria.token).await;
    quiet.next().await.unwrap().unwrap();
    assert_eq!(closing(&mut quiet).await, Some(CloseCode::from(4008)), "idle");

    // A patient who keeps talking is not idle: four messages 300 ms apart outlive the 700 ms.
    let mut talking = open_socket("/v1/chat/ws", &maria.token).await;
    talking.next().await.unwrap().unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        talking.send(Frame::Text("oi".into())).await.unwrap();
        let reply = talking.next().await.unwrap().unwrap();
        assert!(reply.is_text(), "still open: {reply:?}");
    }

    // The event stream: a frame over 1 KiB from the subscriber closes it.
    let mut events = open_socket("/v1/events/ws", &provider.key).await;
    events.send(Frame::Text("x".repeat(2_000).into())).await.unwrap();
    assert_eq!(closing(&mut events).await, Some(CloseCode::Size));
    app.stop().await;
}
