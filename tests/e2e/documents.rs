//! The installment contract is a real PDF: its first page renders (`pdftoppm`), its text says the
//! payment's CET (`pdftotext`, Debian's poppler-utils), it is what ClickSign got (the sandbox
//! refuses anything but a PDF), and the same file is in the object store — a local folder on the
//! embedded defaults, S3 (moto's server, from PyPI) when configured.

use crate::support::{Patient, Provider, TestApp, pay};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const MOTO_VERSION: &str = "5.2.5";
const BUCKET: &str = "medpay-documents";

struct Moto {
    process: std::process::Child,
    url: String,
}

impl Moto {
    async fn start() -> Moto {
        let bin = crate::support::python_venv(&format!("moto[server]=={MOTO_VERSION}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut process = std::process::Command::new(bin.join("python"))
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto's server starts");
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..400 {
            // S3's CreateBucket, once the server answers.
            if let Ok(response) = crate::support::client().put(format!("{url}/{BUCKET}")).send().await
                && response.status().is_success()
            {
                return Moto { process, url };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = process.kill();
        let _ = process.wait();
        panic!("moto's server never answered on {port}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

async fn contract_sent(app: &TestApp, provider: &Provider, patient: &Patient) -> (serde_json::Value, String) {
    let body = json!({
        "patient_id": patient.id, "provider_id": provider.id,
        "procedure": {"tuss_code": "30715016", "description": "Cirurgia de catarata"},
        "amount_centavos": 480_000, "method": "boleto", "installments": 6, "monthly_interest_bps": 249,
        "device": {"id": format!("phone-of-{}", patient.id), "ip": "200.100.50.25"}
    });
    let created = pay(app, provider, &body).await;
    let id = created["id"].as_str().unwrap().to_owned();
    for _ in 0..200 {
        let (_, events) =
            app.request(Method::GET, &format!("/v1/payments/{id}/events"), Some(&provider.key), None, None).await;
        let sent =
            events["data"].as_array().unwrap().iter().find(|event| event["type"] == "payment.contract_sent").cloned();
        if let Some(envelope) = sent.as_ref().and_then(|event| event["data"]["contract"]["envelope_id"].as_str()) {
            return (created, envelope.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the contract was never sent: {created}");
}

/// The contract as the patient opens it from the app.
async fn served(app: &TestApp, patient: &Patient, id: &str) -> Vec<u8> {
    let response = app
        .client
        .get(format!("{}/v1/payments/{id}/contract.pdf", app.base))
        .bearer_auth(&patient.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/pdf");
    response.bytes().await.unwrap().to_vec()
}

/// Renders page 1 and reads the text: the CET of the payment is on it.
fn check_pdf(pdf: &[u8], cet_bps: i64, scratch: &Path) {
    assert!(pdf.starts_with(b"%PDF-"), "a PDF");
    std::fs::create_dir_all(scratch).unwrap();
    let file = scratch.join("contrato.pdf");
    std::fs::write(&file, pdf).unwrap();
    let rendered = std::process::Command::new("pdftoppm")
        .args(["-png", "-r", "40", "-f", "1", "-l", "1", "-singlefile"])
        .arg(&file)
        .arg(scratch.join("page"))
        .status()
        .expect("pdftoppm (Debian's poppler-utils) is required");
    assert!(rendered.success(), "pdftoppm rendered the first page");
    let page = image::open(scratch.join("page.png")).expect("a PNG of page 1").to_luma8();
    // A4 at 40 dpi, with text on it (some dark pixels).
    assert_eq!((page.width(), page.height()), (331, 468), "an A4 page");
    assert!(page.pixels().filter(|pixel| pixel.0[0] < 128).count() > 1_000, "text is drawn");
    let text = std::process::Command::new("pdftotext").args(["-layout"]).arg(&file).arg("-").output().unwrap();
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    let cet = format!("Custo Efetivo Total (CET): {},{:02}% ao ano", cet_bps / 100, cet_bps % 100);
    assert!(text.contains(&cet), "the CET ({cet}) is on the contract:\n{text}");
    assert!(text.contains("CONTRATO DE PARCELAMENTO DE PROCEDIMENTO DE SAÚDE"), "{text}");
    assert!(text.contains("Cirurgia de catarata (TUSS 30715016)"), "{text}");
    assert!(text.contains("6ª parcela - vencimento"), "the schedule:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_is_a_pdf_with_the_cet_kept_in_a_folder_and_on_s3() {
    let scratch = std::env::temp_dir().join(format!("medpay-contract-{}", uuid::Uuid::new_v4().simple()));
    let folder = scratch.join("documents");
    let local = TestApp::spawn_with(crate::support::Engine::Sqlite, |config| {
        config.patients.documents_dir = folder.clone();
    })
    .await;
    let clinic = local.provider(json!({"name": "Clínica Horizonte"})).await;
    let patient = local.patient(&clinic).await;
    let (payment, envelope) = contract_sent(&local, &clinic, &patient).await;
    let id = payment["id"].as_str().unwrap();
    let pdf = served(&local, &patient, id).await;
    check_pdf(&pdf, payment["cet_annual_bps"].as_i64().unwrap(), &scratch.join("local"));
    let kept = std::fs::read(folder.join("contracts").join(format!("{id}.pdf"))).expect("the contract in the folder");
    assert_eq!(kept, pdf, "the folder holds the file served");
    // While it waits, the patient may have ClickSign send the signing link again, once a minute.
    let resend = format!("/v1/payments/{id}/contract/notifications");
    let (status, _) = local.request(Method::POST, &resend, Some(&patient.token), None, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, again) = local.request(Method::POST, &resend, Some(&patient.token), None, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{again}");
    // Signed at ClickSign: its signed copy is fetched into the same store.
    let signed_path = format!("/v1/payments/{id}/signed-contract.pdf");
    let (status, _) = local.request(Method::GET, &signed_path, Some(&patient.token), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not signed yet");
    let signed =
        local.client.post(format!("{}/sandbox/envelopes/{envelope}/sign", local.clicksign)).send().await.unwrap();
    assert_eq!(signed.status(), StatusCode::NO_CONTENT);
    let copy_file = folder.join("contracts").join(format!("{id}-assinado.pdf"));
    for _ in 0..200 {
        if copy_file.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let copy = std::fs::read(&copy_file).expect("the signed copy in the folder");
    let marked = String::from_utf8_lossy(&copy).contains(medpay_gateways::clicksign::SANDBOX_SIGNATURE_MARK);
    assert!(copy.starts_with(&pdf) && marked, "ClickSign's signed copy of the same PDF");
    let mut shown = Vec::new();
    for _ in 0..100 {
        let response =
            local.client.get(format!("{}{signed_path}", local.base)).bearer_auth(&patient.token).send().await.unwrap();
        if response.status() == StatusCode::OK {
            shown = response.bytes().await.unwrap().to_vec();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shown, copy, "the app opens the signed copy");
    let (status, done) = local.request(Method::POST, &resend, Some(&patient.token), None, None).await;
    assert_eq!((status, done["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("contract_not_waiting")));
    check_pdf(&copy, payment["cet_annual_bps"].as_i64().unwrap(), &scratch.join("signed"));
    // Nobody else opens it; a payment without a contract has none.
    let other = local.provider(json!({})).await;
    let (status, _) =
        local.request(Method::GET, &format!("/v1/payments/{id}/contract.pdf"), Some(&other.key), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    local.stop().await;

    let moto = Moto::start().await;
    let options: Vec<(String, String)> = [
        ("aws_endpoint", moto.url.as_str()),
        ("aws_allow_http", "true"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", "medpay-test"),
        ("aws_secret_access_key", "medpay-test-secret"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect();
    let s3 = TestApp::spawn_with(crate::support::Engine::Sqlite, |config| {
        config.patients.documents_url = Some(format!("s3://{BUCKET}/medpay"));
        config.patients.documents_options = options.clone();
    })
    .await;
    let clinic = s3.provider(json!({"name": "Clínica Horizonte"})).await;
    let patient = s3.patient(&clinic).await;
    let (payment, _) = contract_sent(&s3, &clinic, &patient).await;
    let id = payment["id"].as_str().unwrap();
    let pdf = served(&s3, &patient, id).await;
    check_pdf(&pdf, payment["cet_annual_bps"].as_i64().unwrap(), &scratch.join("s3"));
    // Read back from the bucket with a client of its own, at the object's key.
    let bucket = medpay_actors::documents::Documents::at_url(&format!("s3://{BUCKET}/medpay"), &options).unwrap();
    let object =
        bucket.get(&format!("contracts/{id}.pdf")).await.unwrap().expect("the contract is an object in the bucket");
    assert_eq!(object, pdf, "S3 holds the file served");
    let missing = medpay_actors::documents::Documents::at_url(&format!("s3://{BUCKET}/elsewhere"), &options).unwrap();
    assert_eq!(missing.get(&format!("contracts/{id}.pdf")).await.unwrap(), None, "at its key only");
    s3.stop().await;
    drop(moto);
    let _ = std::fs::remove_dir_all(&scratch);
}

/// Evidence for a disputed payment (here a MED claim on a PIX) is kept in the document store and
/// listed with the payment; before a dispute, or from a patient or another provider, it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispute_evidence_is_kept_beside_the_payment() {
    let scratch = std::env::temp_dir().join(format!("medpay-evidence-{}", uuid::Uuid::new_v4().simple()));
    let folder = scratch.join("documents");
    let app = TestApp::spawn_with(crate::support::Engine::Sqlite, |config| {
        config.patients.documents_dir = folder.clone();
    })
    .await;
    let clinic = app.provider(json!({"name": "Clínica Horizonte"})).await;
    let patient = app.patient(&clinic).await;
    let payment = pay(&app, &clinic, &crate::support::payment_body(&clinic, &patient, 20_000)).await;
    let id = payment["id"].as_str().unwrap().to_owned();
    let charge = payment["charge"]["id"].as_str().unwrap();
    let paid = app.client.post(format!("{}/sandbox/charges/{charge}/pay", app.celcoin)).send().await.unwrap();
    assert_eq!(paid.status(), StatusCode::NO_CONTENT);
    crate::money::wait_for(&app, &clinic, &id, |p| p["status"] == "paid").await;

    let evidence = b"%PDF-1.4\n% recibo do procedimento assinado pela paciente\n%%EOF\n".to_vec();
    let post = |body: Vec<u8>, content_type: &'static str, token: String| {
        let request = app
            .client
            .post(format!("{}/v1/payments/{id}/evidence", app.base))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let (status, early) = post(evidence.clone(), "application/pdf", clinic.key.clone()).await;
    assert_eq!((status, early["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("no_dispute")), "{early}");

    // The patient's bank opens a MED claim on the PIX.
    let (status, body) =
        crate::money::sandbox(&app, &format!("/sandbox/charges/{charge}/med"), json!({"amount_centavos": 5_000})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for _ in 0..200 {
        let (_, refunds) =
            app.request(Method::GET, &format!("/v1/payments/{id}/refunds"), Some(&clinic.key), None, None).await;
        if refunds["data"].as_array().is_some_and(|list| list.iter().any(|r| r["kind"] == "med")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, refused) = post(b"just text".to_vec(), "text/plain", clinic.key.clone()).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_evidence")));
    let (status, _) = post(b"%PDF-1.4 fake".to_vec(), "image/png", clinic.key.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a PDF sent as a PNG");
    let (status, _) = post(evidence.clone(), "application/pdf", patient.token.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let other = app.provider(json!({})).await;
    let (status, _) = post(evidence.clone(), "application/pdf", other.key.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Over 5 MiB declared: refused before the body is read (a raw request, as the server closes
    // the connection without reading what follows).
    let mut raw = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://")).await.unwrap();
    let head = format!(
        "POST /v1/payments/{id}/evidence HTTP/1.1\r\nHost: medpay\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/pdf\r\nContent-Length: {}\r\n\r\n",
        clinic.key,
        6 * 1024 * 1024
    );
    tokio::io::AsyncWriteExt::write_all(&mut raw, head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 64];
    let read = tokio::io::AsyncReadExt::read(&mut raw, &mut answer).await.unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..read]).starts_with("HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&answer[..read])
    );

    let (status, kept) = post(evidence.clone(), "application/octet-stream", clinic.key.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{kept}");
    assert_eq!(kept["content_type"], "application/pdf", "told by its first bytes");
    let evidence_id = kept["id"].as_str().unwrap();
    let file = std::fs::read(folder.join("evidence").join(&id).join(format!("{evidence_id}.pdf"))).unwrap();
    assert_eq!(file, evidence, "in the document store");
    let (_, listed) =
        app.request(Method::GET, &format!("/v1/payments/{id}/evidence"), Some(&app.analyst), None, None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["data"][0]["uploaded_by"], format!("provider:{}", clinic.id));
    let read = app
        .client
        .get(format!("{}/v1/payments/{id}/evidence/{evidence_id}", app.base))
        .bearer_auth(&app.analyst)
        .send()
        .await
        .unwrap();
    assert_eq!(read.headers()["content-type"], "application/pdf");
    assert_eq!(read.bytes().await.unwrap().to_vec(), evidence);
    app.stop().await;
    let _ = std::fs::remove_dir_all(&scratch);
}
