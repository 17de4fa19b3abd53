//! The patient app in a real browser (headless Chromium at a phone's size): a patient opens the
//! sign-in link their clinic gave them, sees their payment, reads the PIX QR code (decoded here from
//! a screenshot of what the page drew), pays it through the sandbox and sees "Pago" without a
//! reload; asks the bot about 6 installments, is handed to a person and reads the person's answer
//! as it arrives; another patient's session sees none of it. axe-core checks every state of the
//! page for serious and critical accessibility violations.

use crate::dashboard::{Browser, base64_decode};
use crate::support::{Patient, Provider, TestApp, client, new_key, pay, payment_body};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const AXE_VERSION: &str = "4.14.1";

/// axe-core's script: `MEDPAY_AXE_JS` when set (CI installs it once), else installed from npm into
/// the tests' scratch folder on first use.
pub(crate) fn axe_source() -> String {
    if let Ok(path) = std::env::var("MEDPAY_AXE_JS") {
        return std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("MEDPAY_AXE_JS={path}: {error}"));
    }
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("axe-core-{AXE_VERSION}"));
    let file = dir.join("node_modules/axe-core/axe.min.js");
    if !file.exists() {
        // Installed beside, then renamed: tests in other processes may be installing it too.
        let scratch = dir.with_extension(uuid::Uuid::new_v4().simple().to_string());
        let status = std::process::Command::new("npm")
            .args(["install", "--no-save", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&scratch)
            .arg(format!("axe-core@{AXE_VERSION}"))
            .status()
            .expect("npm is required to install axe-core for the accessibility check");
        assert!(status.success(), "npm install axe-core@{AXE_VERSION} failed");
        if std::fs::rename(&scratch, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&scratch);
        }
    }
    std::fs::read_to_string(&file).unwrap_or_else(|error| panic!("{}: {error}", file.display()))
}

/// The page's serious and critical accessibility violations, as axe-core reports them.
pub(crate) async fn serious_violations(browser: &mut Browser, axe: &str) -> Vec<String> {
    if browser.evaluate("typeof axe").await != json!("object") {
        browser.evaluate(&format!("{axe}\n;true")).await;
    }
    let run = "(async () => { const result = await axe.run(document, { resultTypes: ['violations'] }); \
        return result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical') \
          .map((v) => v.id + ' (' + v.impact + '): ' + v.help + ' at ' + v.nodes.map((n) => n.target.join(' ')).join(', ')); })()";
    let found = browser.evaluate(run).await;
    found.as_array().expect("axe ran").iter().map(|v| v.as_str().unwrap_or_default().to_owned()).collect()
}

async fn phone(browser: &mut Browser) {
    browser
        .call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true}),
        )
        .await;
}

async fn sign_in_link(app: &TestApp, provider: &Provider, patient: &Patient) -> String {
    let path = format!("/v1/patients/{}/sign-in-links", patient.id);
    let (status, link) = app.request(Method::POST, &path, Some(&provider.key), None, None).await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let relative = link["path"].as_str().unwrap();
    assert!(relative.starts_with("/paciente#codigo=mpl_"), "the code is in the fragment, not the query: {link}");
    assert!(link["url"].as_str().unwrap().ends_with(relative), "{link}");
    relative.to_owned()
}

async fn wait_until(browser: &mut Browser, expression: &str) -> Value {
    let mut value = Value::Null;
    for _ in 0..200 {
        value = browser.evaluate(expression).await;
        if value != Value::Null && value != json!(false) {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the page never satisfied {expression}: {value}");
}

/// The QR code the page shows, read off a screenshot of it.
async fn read_qr(browser: &mut Browser) -> String {
    let drawn =
        "(() => { const i = document.querySelector('img.qr'); return !!i && i.complete && i.naturalWidth > 0; })()";
    wait_until(browser, drawn).await;
    let rect = browser
        .evaluate(
            "(() => { const i = document.querySelector('img.qr'); i.scrollIntoView({block: 'center'}); \
             const r = i.getBoundingClientRect(); return {x: r.x + window.scrollX, y: r.y + window.scrollY, w: r.width, h: r.height}; })()",
        )
        .await;
    let clip = json!({"x": rect["x"], "y": rect["y"], "width": rect["w"], "height": rect["h"], "scale": 1});
    let shot = browser.call("Page.captureScreenshot", json!({"format": "png", "clip": clip})).await;
    let png = base64_decode(shot["data"].as_str().unwrap());
    let image = image::load_from_memory(&png).expect("a PNG screenshot").to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(image);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the picture");
    grids[0].decode().expect("the QR code decodes").1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_pays_a_pix_and_talks_to_the_bot_from_the_phone_app() {
    let axe = axe_source();
    let app = TestApp::spawn(crate::support::Engine::Sqlite).await;
    let clinic = app.provider(json!({"name": "Clínica Boa Vista", "escrow": true, "fee_bps": 500})).await;
    let maria = app.patient(&clinic).await;
    let joao = joao(&app, &clinic).await;
    let mut body = payment_body(&clinic, &maria, 123_456);
    body["installments"] = json!(3);
    body["monthly_interest_bps"] = json!(199);
    let payment = pay(&app, &clinic, &body).await;
    let br_code = payment["charge"]["pix_br_code"].as_str().expect("a PIX charge").to_owned();
    let cet = payment["cet_annual_bps"].as_i64().unwrap();

    // Nobody else gives a link: an analyst may not, another provider finds no such patient.
    let path = format!("/v1/patients/{}/sign-in-links", maria.id);
    let (status, _) = app.request(Method::POST, &path, Some(&app.analyst), None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let other = app.provider(json!({"name": "Outra Clínica"})).await;
    let (status, _) = app.request(Method::POST, &path, Some(&other.key), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let mut browser = Browser::launch().await;
    phone(&mut browser).await;
    // Without a link, the page says how to get one.
    browser.call("Page.navigate", json!({"url": format!("{}/paciente", app.base)})).await;
    browser.wait_for_text("abra o link de acesso").await;
    let violations = serious_violations(&mut browser, &axe).await;
    assert!(violations.is_empty(), "signed out: {violations:#?}");

    // Installable: the service worker keeps the shell, which then opens with the network off.
    wait_until(&mut browser, "navigator.serviceWorker.ready.then((r) => !!r.active)").await;
    wait_until(&mut browser, "caches.open('medpay-paciente-v1').then((c) => c.match('/paciente')).then((r) => !!r)")
        .await;
    browser.call("Network.enable", json!({})).await;
    let offline = json!({"offline": true, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1});
    browser.call("Network.emulateNetworkConditions", offline).await;
    browser.evaluate("window.beforeReload = true").await;
    browser.call("Page.reload", json!({})).await;
    // A new document (the old one's mark is gone) showing the app, not the browser's offline page.
    let reloaded = "window.beforeReload === undefined && document.body.innerText.includes('abra o link de acesso')";
    wait_until(&mut browser, reloaded).await;
    let online = json!({"offline": false, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1});
    browser.call("Network.emulateNetworkConditions", online).await;
    let manifest: Value = app
        .client
        .get(format!("{}/paciente/manifest.webmanifest", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((manifest["start_url"].as_str(), manifest["display"].as_str()), (Some("/paciente"), Some("standalone")));

    let link = sign_in_link(&app, &clinic, &maria).await;
    browser.call("Page.navigate", json!({"url": format!("{}{link}", app.base)})).await;
    let page = browser.wait_for_text("R$\u{a0}1.234,56").await;
    assert!(page.contains("Olá, Maria!"), "{page}");
    assert!(page.contains("Clínica Boa Vista") && page.contains("Consulta em consultório"), "{page}");
    assert!(page.contains("Aguardando o seu pagamento"), "{page}");
    let cet_text = format!("CET: {},{:02}% ao ano", cet / 100, cet % 100);
    assert!(page.contains(&cet_text), "the CET of the payment ({cet_text}): {page}");
    assert!(page.contains("3ª"), "the schedule: {page}");
    let address = browser.evaluate("location.href").await;
    assert!(!address.as_str().unwrap().contains("codigo"), "the code leaves the address bar: {address}");
    // The link worked once.
    let code = link.split("codigo=").nth(1).unwrap();
    let (status, again) =
        app.request(Method::POST, "/v1/patient-sessions", None, Some(&json!({"code": code})), None).await;
    assert_eq!((status, again["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_sign_in_code")));

    // The QR code the page drew is exactly the BR Code; its "copia e cola" too.
    assert_eq!(read_qr(&mut browser).await, br_code);
    assert_eq!(browser.evaluate("document.querySelector('.pix-code').textContent").await, json!(br_code));
    let violations = serious_violations(&mut browser, &axe).await;
    assert!(violations.is_empty(), "a payment open: {violations:#?}");

    // Paid through the sandbox: the page follows without a reload.
    let live = "document.getElementById('connection').textContent.includes('ao vivo')";
    wait_until(&mut browser, live).await;
    let charge = payment["charge"]["id"].as_str().unwrap();
    let paid = app.client.post(format!("{}/sandbox/charges/{charge}/pay", app.celcoin)).send().await.unwrap();
    assert_eq!(paid.status(), StatusCode::NO_CONTENT);
    let status = "document.querySelector('.payment-status').textContent.startsWith('Pago') && document.querySelector('.payment-status').textContent";
    let shown = wait_until(&mut browser, status).await;
    assert!(shown.as_str().unwrap().starts_with("Pago"), "{shown}");
    assert_eq!(browser.evaluate("performance.getEntriesByType('navigation').length").await, json!(1), "no reload");
    // The e-mails about it are listed in the app (on the embedded defaults they go to a folder).
    browser.wait_for_text("Pagamento confirmado: R$").await;
    let states =
        "Array.from(document.querySelectorAll('.installment-state')).map((cell) => cell.textContent).join(',')";
    assert_eq!(
        wait_until(&mut browser, &format!("{states} === 'paga,a pagar agora,a vencer' && {states}")).await,
        json!("paga,a pagar agora,a vencer")
    );

    // The simulator: the same Tabela Price as the payment core.
    browser
        .evaluate("document.getElementById('sim-amount').value = '1.500,00'; document.getElementById('sim-count').value = '6'; document.querySelector('#simulator-form button').click(); true")
        .await;
    let (_, simulated) = app
        .request(Method::GET, "/v1/simulations?amount_centavos=150000&installments=6", Some(&maria.token), None, None)
        .await;
    let first = simulated["installments"][0]["amount_centavos"].as_i64().unwrap();
    let expected = format!("6x de R$\u{a0}{},{:02}", first / 100, first % 100);
    browser.wait_for_text(&expected).await;

    // The bot answers in the chat; then a person takes over and their answer arrives.
    browser.wait_for_text("assistente virtual").await;
    let type_and_send = |text: &str| {
        format!(
            "document.getElementById('chat-input').value = {}; document.querySelector('#chat-form button').click(); true",
            serde_json::to_string(text).unwrap()
        )
    };
    browser.evaluate(&type_and_send("quanto fica em 6x?")).await;
    let page = browser.wait_for_text("em 6x: parcelas de").await;
    assert!(page.contains("R$ 1.234,56 em 6x"), "the bot simulates Maria's own payment: {page}");
    browser.evaluate(&type_and_send("quero falar com alguém")).await;
    wait_until(&mut browser, "!document.getElementById('handoff').hidden").await;
    let (_, handoffs) = app.request(Method::GET, "/v1/chat/handoffs", Some(&app.analyst), None, None).await;
    let conversation = handoffs["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|handoff| handoff["conversation"]["patient_id"] == maria.id.as_str())
        .map(|handoff| handoff["conversation"]["id"].as_str().unwrap().to_owned())
        .expect("Maria's conversation was handed off");
    let answer = json!({"text": "Olá, Maria! Sou a Ana, da equipe MedPay. Já vi o seu pagamento."});
    let (status, _) = app
        .request(
            Method::POST,
            &format!("/v1/chat/conversations/{conversation}/agent-messages"),
            Some(&app.analyst),
            Some(&answer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    browser.wait_for_text("Sou a Ana, da equipe MedPay").await;
    let agent = browser.evaluate("document.querySelectorAll('.message.agent').length").await;
    assert_eq!(agent, json!(1), "the person's answer once");
    let violations = serious_violations(&mut browser, &axe).await;
    assert!(violations.is_empty(), "after paying and chatting: {violations:#?}");
    if let Ok(path) = std::env::var("MEDPAY_PATIENT_SCREENSHOT") {
        browser.evaluate("window.scrollTo(0, 0); true").await;
        let shot = browser.call("Page.captureScreenshot", json!({"format": "png"})).await;
        std::fs::write(path, base64_decode(shot["data"].as_str().unwrap())).unwrap();
    }

    // João signs in on the same phone after Maria signs out: none of Maria's is shown.
    browser.evaluate("document.getElementById('sign-out').click(); true").await;
    browser.wait_for_text("Você saiu.").await;
    let link = sign_in_link(&app, &clinic, &joao).await;
    browser.call("Page.navigate", json!({"url": format!("{}{link}", app.base)})).await;
    let page = browser.wait_for_text("Você ainda não tem pagamentos.").await;
    assert!(page.contains("Olá, João!"), "{page}");
    assert!(!page.contains("1.234,56") && !page.contains("Ana") && !page.contains("Maria"), "{page}");
    browser.close().await;
    app.stop().await;
}

async fn joao(app: &TestApp, clinic: &Provider) -> Patient {
    let body = json!({"name": "João Pereira", "cpf": crate::support::unique_cpf(), "email": "joao@example.com", "phone": "+55 21 98888-7777"});
    let (status, created) = app.request(Method::POST, "/v1/patients", Some(&clinic.key), Some(&body), None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    Patient { id: created["id"].as_str().unwrap().to_owned(), token: created["token"].as_str().unwrap().to_owned() }
}

/// One SSE stream's `payment` events, read in the background.
fn collect_stream(app: &TestApp, token: &str) -> tokio::sync::mpsc::UnboundedReceiver<Value> {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let request = client().get(format!("{}/v1/me/stream", app.base)).bearer_auth(token);
    tokio::spawn(async move {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let _ = sender.send(json!({"opened": true}));
        let mut response = response;
        let mut buffer = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                if let Some(data) = block.lines().find_map(|line| line.strip_prefix("data:"))
                    && let Ok(value) = serde_json::from_str::<Value>(data.trim())
                {
                    let _ = sender.send(value);
                }
            }
        }
    });
    receiver
}

async fn session(app: &TestApp, provider: &Provider, patient: &Patient) -> String {
    let link = sign_in_link(app, provider, patient).await;
    let code = link.split("codigo=").nth(1).unwrap();
    let (status, opened) =
        app.request(Method::POST, "/v1/patient-sessions", None, Some(&json!({"code": code})), None).await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    assert!(opened["token"].as_str().unwrap().starts_with("mps_"));
    opened["token"].as_str().unwrap().to_owned()
}

/// Each patient's stream carries their own payments' events and nobody else's, though both are
/// the same clinic's; a session signs out for good; wrong codes are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patients_stream_and_session_are_their_own() {
    let app = TestApp::spawn(crate::support::Engine::Sqlite).await;
    let clinic = app.provider(json!({"name": "Clínica Boa Vista"})).await;
    let maria = app.patient(&clinic).await;
    let joao = app.patient(&clinic).await;
    let maria_session = session(&app, &clinic, &maria).await;
    let joao_session = session(&app, &clinic, &joao).await;
    let mut maria_events = collect_stream(&app, &maria_session);
    let mut joao_events = collect_stream(&app, &joao_session);
    assert_eq!(maria_events.recv().await, Some(json!({"opened": true})));
    assert_eq!(joao_events.recv().await, Some(json!({"opened": true})));

    let payment = pay(&app, &clinic, &payment_body(&clinic, &maria, 20_000)).await;
    let id = payment["id"].as_str().unwrap();
    let charge = payment["charge"]["id"].as_str().unwrap();
    app.client.post(format!("{}/sandbox/charges/{charge}/pay", app.celcoin)).send().await.unwrap();
    let mut kinds = Vec::new();
    while !kinds.iter().any(|kind| kind == "payment.paid") {
        let event = tokio::time::timeout(Duration::from_secs(20), maria_events.recv()).await.unwrap().unwrap();
        assert_eq!(event["payment_id"], id, "{event}");
        kinds.push(event["type"].as_str().unwrap().to_owned());
    }
    assert!(kinds.contains(&"payment.requested".to_owned()), "{kinds:?}");
    // João's own payment reaches him; none of Maria's came before it.
    let his = pay(&app, &clinic, &payment_body(&clinic, &joao, 30_000)).await;
    let first = tokio::time::timeout(Duration::from_secs(20), joao_events.recv()).await.unwrap().unwrap();
    assert_eq!(first["payment_id"], his["id"], "João's first event is his own: {first}");

    // The session reads only its own; the app's view hides how the payment was scored.
    let (status, mine) = app.request(Method::GET, "/v1/me/payments", Some(&joao_session), None, None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> =
        mine["data"].as_array().unwrap().iter().map(|p| p["payment"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![his["id"].as_str().unwrap()]);
    assert!(mine["data"][0]["payment"]["decision"].is_null());
    let qr = format!("/v1/payments/{id}/pix-qr");
    let (status, _) = app.request(Method::GET, &qr, Some(&joao_session), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "Maria's QR code is not João's to read");
    let (status, _) = app.request(Method::GET, "/v1/me/payments", Some(&clinic.key), None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Signed out, the session is worthless.
    let (status, _) =
        app.request(Method::DELETE, "/v1/patient-sessions/current", Some(&joao_session), None, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.request(Method::GET, "/v1/me/payments", Some(&joao_session), None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Bad codes: 400 for a bad body, 401 for an unknown code; nothing is opened.
    let (status, bad) = app.request(Method::POST, "/v1/patient-sessions", None, Some(&json!({"code": 7})), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    let (status, unknown) = app
        .request(Method::POST, "/v1/patient-sessions", None, Some(&json!({"code": format!("mpl_{}", new_key())})), None)
        .await;
    assert_eq!((status, unknown["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_sign_in_code")));
    // The simulator refuses what a payment could not be.
    let (status, refused) = app
        .request(Method::GET, "/v1/simulations?amount_centavos=1000&installments=99", Some(&maria_session), None, None)
        .await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_installments")));
    app.stop().await;
}
