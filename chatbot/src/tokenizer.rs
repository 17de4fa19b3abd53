//! The subword tokenizer: byte-pair encoding trained once on the project's own Portuguese corpus
//! (`medpay chatbot tokenizer`) and committed as `chatbot/tokenizer.json`; nothing is fetched at
//! run time. Text is decomposed, stripped of accents and lower-cased before it is split, so
//! "não", "nao" and "NÃO" are the same tokens.

use std::str::FromStr;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::{Lowercase, NFD, Sequence, StripAccents};
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer,
    TokenizerBuilder,
};

/// The committed tokenizer.
pub const TOKENIZER_JSON: &str = include_str!("../tokenizer.json");
pub const UNKNOWN: &str = "[UNK]";

#[derive(Debug, thiserror::Error)]
#[error("tokenizer: {0}")]
pub struct TokenizerError(String);

fn error(cause: impl std::fmt::Display) -> TokenizerError {
    TokenizerError(cause.to_string())
}

/// Trains a BPE tokenizer of at most `vocab_size` tokens on `texts`.
pub fn train(texts: &[String], vocab_size: usize) -> Result<Tokenizer, TokenizerError> {
    let model = BPE::builder().unk_token(UNKNOWN.to_owned()).build().map_err(error)?;
    let normalizer = NormalizerWrapper::Sequence(Sequence::new(vec![
        NormalizerWrapper::NFD(NFD),
        NormalizerWrapper::StripAccents(StripAccents),
        NormalizerWrapper::Lowercase(Lowercase),
    ]));
    let mut tokenizer =
        TokenizerBuilder::<BPE, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>::new()
            .with_model(model)
            .with_normalizer(Some(normalizer))
            .with_pre_tokenizer(Some(PreTokenizerWrapper::Whitespace(Whitespace {})))
            .build()
            .map_err(error)?;
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(UNKNOWN.to_owned(), true)])
        .build();
    tokenizer.train(&mut trainer, texts.iter()).map_err(error)?;
    let json = tokenizer.to_string(false).map_err(error)?;
    Tokenizer::from_str(&json).map_err(error)
}

/// The committed tokenizer, loaded.
pub fn committed() -> Result<Tokenizer, TokenizerError> {
    Tokenizer::from_str(TOKENIZER_JSON).map_err(error)
}

/// The subword tokens of `text`.
pub fn tokens(tokenizer: &Tokenizer, text: &str) -> Result<Vec<String>, TokenizerError> {
    Ok(tokenizer.encode(text, false).map_err(error)?.get_tokens().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_tokenizer_splits_portuguese_into_known_subwords() {
        let tokenizer = committed().unwrap();
        let plain = tokens(&tokenizer, "Não reconheço esta cobrança").unwrap();
        let bare = tokens(&tokenizer, "nao reconheco esta cobranca").unwrap();
        assert_eq!(plain, bare, "accents and case do not matter");
        assert!(!plain.is_empty() && plain.iter().all(|token| token != UNKNOWN), "{plain:?}");
        // A word it never saw is still split into pieces it knows.
        let unseen = tokens(&tokenizer, "reconhecimentozinho").unwrap();
        assert!(unseen.len() > 1, "{unseen:?}");
    }
}
