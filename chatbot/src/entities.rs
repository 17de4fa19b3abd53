//! Entities in Brazilian Portuguese messages: amounts ("R$ 1.234,56", "1500 reais", "mil e
//! quinhentos", "R$ 80 e 50 centavos") and installment counts ("em 6x", "seis vezes", "12
//! parcelas"). Accents, case and common typos of accents ("tres", "dez mil") do not matter.

/// Largest amount read: R$ 10.000.000,00, in centavos.
pub const AMOUNT_MAX_CENTAVOS: i64 = 1_000_000_000;
/// Most installments read.
pub const INSTALLMENTS_MAX: u32 = 48;

/// Lower case, accents removed, punctuation that is not part of numbers turned into spaces.
pub fn normalise(text: &str) -> String {
    text.chars()
        .map(|c| match c.to_lowercase().next().unwrap_or(c) {
            'á' | 'à' | 'â' | 'ã' | 'ä' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'í' | 'ì' | 'î' | 'ï' => 'i',
            'ó' | 'ò' | 'ô' | 'õ' | 'ö' => 'o',
            'ú' | 'ù' | 'û' | 'ü' => 'u',
            'ç' => 'c',
            c if c.is_alphanumeric() || matches!(c, ',' | '.' | '$') => c,
            _ => ' ',
        })
        .collect()
}

fn unit(word: &str) -> Option<i64> {
    Some(match word {
        "zero" => 0,
        "um" | "uma" => 1,
        "dois" | "duas" => 2,
        "tres" => 3,
        "quatro" => 4,
        "cinco" => 5,
        "seis" | "meia" => 6,
        "sete" => 7,
        "oito" => 8,
        "nove" => 9,
        "dez" => 10,
        "onze" => 11,
        "doze" => 12,
        "treze" => 13,
        "quatorze" | "catorze" => 14,
        "quinze" => 15,
        "dezesseis" | "dezeseis" => 16,
        "dezessete" | "dezesete" => 17,
        "dezoito" => 18,
        "dezenove" => 19,
        "vinte" => 20,
        "trinta" => 30,
        "quarenta" => 40,
        "cinquenta" | "cincoenta" => 50,
        "sessenta" => 60,
        "setenta" => 70,
        "oitenta" => 80,
        "noventa" => 90,
        "cem" | "cento" => 100,
        "duzentos" | "duzentas" => 200,
        "trezentos" | "trezentas" => 300,
        "quatrocentos" | "quatrocentas" => 400,
        "quinhentos" | "quinhentas" => 500,
        "seiscentos" | "seiscentas" => 600,
        "setecentos" | "setecentas" => 700,
        "oitocentos" | "oitocentas" => 800,
        "novecentos" | "novecentas" => 900,
        _ => return None,
    })
}

/// A number written in words or digits at the start of `words`: (value, words used).
/// "dois mil e trezentos e cinquenta" → 2350; "mil e quinhentos" → 1500; "1.500" → 1500.
fn number(words: &[&str]) -> Option<(i64, usize)> {
    let first = *words.first()?;
    if first.bytes().all(|b| b.is_ascii_digit() || b == b'.') && first.bytes().any(|b| b.is_ascii_digit()) {
        let digits: String = first.chars().filter(char::is_ascii_digit).collect();
        return digits.parse().ok().map(|value| (value, 1));
    }
    let (mut total, mut group, mut used, mut any) = (0i64, 0i64, 0usize, false);
    while used < words.len() {
        let word = words[used];
        if word == "e" && any && words.get(used + 1).is_some_and(|next| unit(next).is_some()) {
            used += 1;
            continue;
        }
        if word == "mil" {
            total += if group == 0 { 1_000 } else { group * 1_000 };
            group = 0;
        } else if word == "milhao" || word == "milhoes" {
            total = (total + group.max(1)) * 1_000_000;
            group = 0;
        } else if let Some(value) = unit(word) {
            group += value;
        } else {
            break;
        }
        any = true;
        used += 1;
    }
    any.then_some((total + group, used))
}

/// An amount in centavos, if the message names one.
pub fn amount_centavos(text: &str) -> Option<i64> {
    let text = normalise(text);
    // Digits with a currency sign or "reais": "R$ 1.234,56", "r$80", "1500 reais", "1500,00".
    let tokens: Vec<&str> = text.split_whitespace().collect();
    for (index, token) in tokens.iter().enumerate() {
        let (sign, rest) = match token.strip_prefix("r$") {
            Some(rest) => (true, rest),
            None => (false, *token),
        };
        let rest = if rest.is_empty() && sign { tokens.get(index + 1).copied().unwrap_or("") } else { rest };
        let followed_by_reais = tokens.get(index + 1).is_some_and(|next| next.starts_with("rea") || *next == "real");
        let looks_like_money = rest.contains(',') && rest.rsplit(',').next().is_some_and(|cents| cents.len() == 2);
        if (sign || followed_by_reais || looks_like_money)
            && rest.bytes().any(|b| b.is_ascii_digit())
            && let Some(value) = digits_amount(rest)
        {
            return Some(value).filter(|value| *value <= AMOUNT_MAX_CENTAVOS);
        }
    }
    // Words: "mil e quinhentos reais", "oitenta reais e cinquenta centavos".
    for start in 0..tokens.len() {
        if let Some((reais, used)) = number(&tokens[start..]) {
            let next = tokens.get(start + used).copied().unwrap_or("");
            let money_word =
                next.starts_with("rea") || next == "real" || tokens.get(start.wrapping_sub(1)) == Some(&"r$");
            if !money_word {
                continue;
            }
            let mut centavos = reais * 100;
            if tokens.get(start + used + 1) == Some(&"e")
                && let Some((cents, cents_used)) = number(&tokens[start + used + 2..])
                && tokens.get(start + used + 2 + cents_used).is_some_and(|word| word.starts_with("centavo"))
                && cents < 100
            {
                centavos += cents;
            }
            return Some(centavos).filter(|value| *value <= AMOUNT_MAX_CENTAVOS);
        }
    }
    None
}

/// An amount named without a currency word, when the context says it is money (a simulation):
/// "1500 em 6x", "dois mil em 4x". A number that counts installments ("6x", "6 vezes") is not it,
/// nor anything under R$ 10,00.
pub fn loose_amount_centavos(text: &str) -> Option<i64> {
    if let Some(amount) = amount_centavos(text) {
        return Some(amount);
    }
    let text = normalise(text);
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let counts_something = |index: usize| {
        tokens
            .get(index)
            .is_some_and(|next| next.starts_with('x') || next.starts_with("vez") || next.starts_with("parcela"))
    };
    for start in 0..tokens.len() {
        let token = tokens[start];
        let (value, used) = if token.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b',')
            && token.bytes().any(|b| b.is_ascii_digit())
        {
            (digits_amount(token), 1)
        } else if let Some((reais, used)) = number(&tokens[start..]) {
            (reais.checked_mul(100), used)
        } else {
            continue;
        };
        if counts_something(start + used) {
            continue;
        }
        if let Some(value) = value.filter(|value| (1_000..=AMOUNT_MAX_CENTAVOS).contains(value)) {
            return Some(value);
        }
    }
    None
}

/// "1.234,56" or "1234.56" or "1500" as centavos.
fn digits_amount(text: &str) -> Option<i64> {
    let text = text.trim_matches(|c: char| !c.is_ascii_digit());
    let (whole, cents) = match text.rsplit_once(',') {
        Some((whole, cents)) if cents.len() == 2 => (whole.replace('.', ""), cents.to_owned()),
        _ => match text.rsplit_once('.') {
            // "1234.56": a dot followed by exactly two digits is a decimal point.
            Some((whole, cents)) if cents.len() == 2 && !whole.contains('.') => (whole.to_owned(), cents.to_owned()),
            _ => (text.replace(['.', ','], ""), "00".to_owned()),
        },
    };
    let whole: i64 = whole.parse().ok()?;
    let cents: i64 = cents.parse().ok()?;
    whole.checked_mul(100)?.checked_add(cents)
}

/// An installment count, if the message names one: "em 6x", "6 x", "seis vezes", "12 parcelas".
pub fn installments(text: &str) -> Option<u32> {
    let text = normalise(text);
    let tokens: Vec<&str> = text.split_whitespace().collect();
    for (index, token) in tokens.iter().enumerate() {
        // "6x" or "10x".
        if let Some(count) =
            token.strip_suffix('x').filter(|count| !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()))
        {
            return count.parse().ok().filter(|count| (1..=INSTALLMENTS_MAX).contains(count));
        }
        let next = tokens.get(index + 1).copied().unwrap_or("");
        let counted =
            next == "x" || next.starts_with("vez") || next.starts_with("parcela") || next.starts_with("prestac");
        if counted && let Some((count, 1)) = number(&tokens[index..]) {
            return u32::try_from(count).ok().filter(|count| (1..=INSTALLMENTS_MAX).contains(count));
        }
    }
    None
}

/// A payment reference: a word of 8 or more hexadecimal characters (with at least one digit), the
/// way payment ids are shown ("01a22a4c"), lower-cased; dashes of a whole id are kept.
pub fn payment_reference(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, ',' | '.' | '?' | '!' | ':' | ';' | '#'))
        .map(|word| word.trim().to_lowercase())
        .find(|word| {
            let hex: Vec<char> = word.chars().filter(|c| *c != '-').collect();
            hex.len() >= 8
                && word.len() <= 36
                && hex.iter().all(char::is_ascii_hexdigit)
                && hex.iter().any(char::is_ascii_digit)
        })
}

/// A date: "hoje", "ontem", "amanhã", "dd/mm", "dd/mm/aaaa" (the year defaults to `today`'s).
pub fn date(text: &str, today: chrono::NaiveDate) -> Option<chrono::NaiveDate> {
    let words = normalise(text);
    for word in words.split_whitespace() {
        match word {
            "hoje" => return Some(today),
            "ontem" => return today.pred_opt(),
            "amanha" => return today.succ_opt(),
            _ => {}
        }
    }
    text.split_whitespace().find_map(|word| {
        let word = word.trim_matches(|c: char| !c.is_ascii_digit());
        let parts: Vec<&str> = word.split('/').collect();
        let (day, month) = (parts.first()?.parse::<u32>().ok()?, parts.get(1)?.parse::<u32>().ok()?);
        let year = match parts.get(2) {
            Some(year) if year.len() == 2 => 2000 + year.parse::<i32>().ok()?,
            Some(year) => year.parse::<i32>().ok()?,
            None => chrono::Datelike::year(&today),
        };
        chrono::NaiveDate::from_ymd_opt(year, month, day)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_as_brazilians_write_them() {
        assert_eq!(amount_centavos("quanto fica R$ 1.234,56 em 6x?"), Some(123_456));
        assert_eq!(amount_centavos("e se for r$80?"), Some(8_000));
        assert_eq!(amount_centavos("uma consulta de 1500 reais"), Some(150_000));
        assert_eq!(amount_centavos("paguei 250,90 ontem"), Some(25_090));
        assert_eq!(amount_centavos("mil e quinhentos reais em 10 vezes"), Some(150_000));
        assert_eq!(amount_centavos("dois mil e trezentos e cinquenta reais"), Some(235_000));
        assert_eq!(amount_centavos("oitenta reais e cinquenta centavos"), Some(8_050));
        assert_eq!(amount_centavos("cento e vinte reais"), Some(12_000));
        assert_eq!(amount_centavos("Três mil Reais"), Some(300_000));
        assert_eq!(amount_centavos("R$ 1234.56"), Some(123_456));
        assert_eq!(amount_centavos("já caiu meu pix?"), None);
        assert_eq!(amount_centavos("em 6x"), None, "an installment count is not an amount");
        assert_eq!(amount_centavos("R$ 99999999999"), None, "beyond the limit");
    }

    #[test]
    fn loose_amounts_in_a_simulation() {
        assert_eq!(loose_amount_centavos("quanto fica 1500 em 6x?"), Some(150_000));
        assert_eq!(loose_amount_centavos("dois mil em 4x"), Some(200_000));
        assert_eq!(loose_amount_centavos("e em 10x?"), None);
        assert_eq!(loose_amount_centavos("em 12 vezes"), None);
        assert_eq!(loose_amount_centavos("R$ 80,50 em 2x"), Some(8_050));
    }

    #[test]
    fn references_and_dates() {
        assert_eq!(payment_reference("status do pagamento 01a22a4c?").as_deref(), Some("01a22a4c"));
        assert_eq!(payment_reference("o pagamento 01A22A4C-9C0B"), Some("01a22a4c-9c0b".to_owned()));
        assert_eq!(payment_reference("paguei ontem e nada"), None);
        assert_eq!(payment_reference("abcdefab"), None, "a word of letters only is not a reference");
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        assert_eq!(date("paguei ontem", today), chrono::NaiveDate::from_ymd_opt(2026, 11, 29));
        assert_eq!(date("o pagamento de 10/11", today), chrono::NaiveDate::from_ymd_opt(2026, 11, 10));
        assert_eq!(date("vence 05/01/2027.", today), chrono::NaiveDate::from_ymd_opt(2027, 1, 5));
        assert_eq!(date("dia 31/02", today), None);
        assert_eq!(date("amanhã cedo", today), chrono::NaiveDate::from_ymd_opt(2026, 12, 1));
    }

    #[test]
    fn installment_counts() {
        assert_eq!(installments("quanto fica em 6x?"), Some(6));
        assert_eq!(installments("e em 10x"), Some(10));
        assert_eq!(installments("da pra fazer em seis vezes?"), Some(6));
        assert_eq!(installments("12 parcelas"), Some(12));
        assert_eq!(installments("em doze prestações"), Some(12));
        assert_eq!(installments("3 x sem juros"), Some(3));
        assert_eq!(installments("em 99x"), None, "beyond the limit");
        assert_eq!(installments("quero a segunda via do boleto"), None);
    }

    #[test]
    fn number_words() {
        let words = |text: &str| number(&text.split_whitespace().collect::<Vec<_>>()).map(|(value, _)| value);
        assert_eq!(words("mil"), Some(1_000));
        assert_eq!(words("vinte e cinco"), Some(25));
        assert_eq!(words("um milhao"), Some(1_000_000));
        assert_eq!(words("novecentos e noventa e nove"), Some(999));
        assert_eq!(words("reais"), None);
    }
}
