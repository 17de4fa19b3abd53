//! Installment contracts: a plan of at least `contract_min_centavos` in more than one installment
//! is charged only after the patient signs, through ClickSign, a contract that states the parties,
//! the procedure, the schedule, the total and the CET. The contract's steps are in
//! `lifecycle/contracts.rs`; this is its document, a PDF (`pdf-writer`), in Portuguese.
//!
//! The text is set in the PDF standard font Helvetica (no font file to ship), whose WinAnsi
//! encoding holds every letter Portuguese needs; lines are wrapped and paged here.

use medpay_store::PaymentRecord;
use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str};

fn brl(centavos: i64) -> String {
    medpay_models::Money::from_centavos(centavos).brl()
}

fn percent(bps: i64) -> String {
    medpay_models::money::percent_pt(bps)
}

/// Who signs and with whom.
pub struct Parties<'a> {
    pub patient_name: &'a str,
    pub cpf_formatted: &'a str,
    pub provider_name: &'a str,
    pub provider_cnpj_formatted: &'a str,
}

/// One line of the document: its text and whether it is a heading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Title(String),
    Heading(String),
    Text(String),
    Blank,
}

/// What the contract says, line by line.
pub fn contract_lines(payment: &PaymentRecord, parties: &Parties) -> Vec<Line> {
    let mut lines = vec![
        Line::Title("CONTRATO DE PARCELAMENTO DE PROCEDIMENTO DE SAÚDE".to_owned()),
        Line::Blank,
        Line::Heading("Partes".to_owned()),
        Line::Text(format!("Paciente: {} (CPF {})", parties.patient_name, parties.cpf_formatted)),
        Line::Text(format!("Prestador: {} (CNPJ {})", parties.provider_name, parties.provider_cnpj_formatted)),
        Line::Text("Intermediadora do pagamento: MedPay".to_owned()),
        Line::Blank,
        Line::Heading("Procedimento e valores".to_owned()),
        Line::Text(format!("Procedimento: {} (TUSS {})", payment.description, payment.tuss_code.as_str())),
        Line::Text(format!("Valor à vista: {}", brl(payment.amount_centavos))),
        Line::Text(format!(
            "Juros: {} ao mês, em {} parcelas pela Tabela Price",
            percent(payment.monthly_interest_bps),
            payment.installments.len()
        )),
        Line::Text(format!("Total a prazo: {}", brl(payment.total_centavos))),
        Line::Text(format!("Custo Efetivo Total (CET): {} ao ano", percent(payment.cet_annual_bps))),
        Line::Blank,
        Line::Heading("Parcelas".to_owned()),
    ];
    for installment in &payment.installments {
        lines.push(Line::Text(format!(
            "{:>2}ª parcela - vencimento {} - {}",
            installment.number,
            installment.due_date.format("%d/%m/%Y"),
            brl(installment.amount_centavos)
        )));
    }
    lines.extend([
        Line::Blank,
        Line::Heading("Condições".to_owned()),
        Line::Text(
            "1. O paciente pagará cada parcela até o seu vencimento, por PIX ou boleto emitidos pela MedPay em nome do prestador."
                .to_owned(),
        ),
        Line::Text(
            "2. O atraso sujeita a parcela a multa de 2% e a juros de mora de 1% ao mês (Código de Defesa do Consumidor, art. 52, § 1º)."
                .to_owned(),
        ),
        Line::Text(
            "3. O paciente pode quitar o saldo antecipadamente, com redução proporcional dos juros (Código de Defesa do Consumidor, art. 52, § 2º)."
                .to_owned(),
        ),
        Line::Text(
            "4. Os dados pessoais deste contrato são tratados conforme a Lei 13.709/2018 (LGPD), só para processar o pagamento e prevenir fraudes."
                .to_owned(),
        ),
        Line::Blank,
        Line::Text(format!("Referência do pagamento: {}", payment.id)),
        Line::Text("Assinado eletronicamente pelo paciente por meio da ClickSign.".to_owned()),
    ]);
    lines
}

/// Text in the PDF's WinAnsi encoding: Latin-1 as is, the few Windows-1252 punctuation marks
/// mapped, anything else as `?`.
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{ff}' => c as u8,
            '\u{2013}' => 0x96,
            '\u{2014}' => 0x97,
            '\u{2022}' => 0x95,
            '\u{201c}' => 0x93,
            '\u{201d}' => 0x94,
            '\u{2018}' => 0x91,
            '\u{2019}' => 0x92,
            '\u{20ac}' => 0x80,
            _ => b'?',
        })
        .collect()
}

/// Words of `text` in lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        if !current.is_empty() && current.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

/// A4 in points, its margins, and the type.
const PAGE_WIDTH: f32 = 595.0;
const PAGE_HEIGHT: f32 = 842.0;
const MARGIN: f32 = 56.0;
const TEXT_SIZE: f32 = 10.5;
const LEADING: f32 = 15.0;
/// Characters of body text in a line (Helvetica at 10.5 pt over 483 pt averages about 92).
const WRAP_CHARACTERS: usize = 88;

/// The contract as a PDF document: A4 pages of Helvetica, paged as long as the schedule needs.
pub fn contract_pdf(payment: &PaymentRecord, parties: &Parties) -> Vec<u8> {
    // Laid out first: (font, size, text) per line, pages cut where the next line would not fit.
    let mut pages: Vec<Vec<(bool, f32, String)>> = vec![Vec::new()];
    let per_page = ((PAGE_HEIGHT - 2.0 * MARGIN) / LEADING) as usize;
    for line in contract_lines(payment, parties) {
        let rows: Vec<(bool, f32, String)> = match line {
            Line::Title(text) => vec![(true, 14.0, text)],
            Line::Heading(text) => vec![(true, 11.5, text)],
            Line::Text(text) => wrap(&text, WRAP_CHARACTERS).into_iter().map(|row| (false, TEXT_SIZE, row)).collect(),
            Line::Blank => vec![(false, TEXT_SIZE, String::new())],
        };
        for row in rows {
            if pages.last().is_some_and(|page| page.len() >= per_page) {
                pages.push(Vec::new());
            }
            if let Some(page) = pages.last_mut() {
                page.push(row);
            }
        }
    }
    let total = pages.len();
    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let regular = Ref::new(3);
    let bold = Ref::new(4);
    let first_page = 5;
    let page_ids: Vec<Ref> = (0..total).map(|n| Ref::new(first_page + 2 * n as i32)).collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids(page_ids.iter().copied()).count(total as i32);
    pdf.type1_font(regular).base_font(Name(b"Helvetica")).encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold).base_font(Name(b"Helvetica-Bold")).encoding_predefined(Name(b"WinAnsiEncoding"));
    for (index, rows) in pages.iter().enumerate() {
        let page_id = page_ids[index];
        let content_id = Ref::new(page_id.get() + 1);
        let mut page = pdf.page(page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_WIDTH, PAGE_HEIGHT));
        page.parent(tree);
        page.contents(content_id);
        let mut resources = page.resources();
        let mut fonts = resources.fonts();
        fonts.pair(Name(b"F1"), regular);
        fonts.pair(Name(b"F2"), bold);
        fonts.finish();
        resources.finish();
        page.finish();
        let mut content = Content::new();
        let mut y = PAGE_HEIGHT - MARGIN;
        for (is_bold, size, text) in rows {
            if !text.is_empty() {
                content.begin_text();
                content.set_font(Name(if *is_bold { b"F2" } else { b"F1" }), *size);
                content.next_line(MARGIN, y);
                content.show(Str(&win_ansi(text)));
                content.end_text();
            }
            y -= LEADING;
        }
        let footer = format!("Página {} de {}", index + 1, total);
        content.begin_text();
        content.set_font(Name(b"F1"), 8.0);
        content.next_line(MARGIN, MARGIN / 2.0);
        content.show(Str(&win_ansi(&footer)));
        content.end_text();
        pdf.stream(content_id, &content.finish());
    }
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portuguese_letters_are_one_byte_each_and_long_lines_wrap() {
        assert_eq!(win_ansi("Saúde à vista, ção — 1ª"), b"Sa\xfade \xe0 vista, \xe7\xe3o \x97 1\xaa".to_vec());
        let lines = wrap("um dois três quatro cinco seis", 10);
        assert_eq!(lines, vec!["um dois", "três", "quatro", "cinco seis"]);
        assert!(lines.iter().all(|line| line.chars().count() <= 10));
    }
}
