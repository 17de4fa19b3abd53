-- A provider's own price list by TUSS code (issue 14): the model's "amount against the usual
-- price" uses it when the code has a price, the median of the provider's recent amounts
-- otherwise. Replaced whole by `PUT /v1/providers/{id}/prices`. Never edit once applied.
CREATE TABLE provider_prices (
    provider_id     TEXT NOT NULL REFERENCES providers (id),
    tuss_code       TEXT NOT NULL,
    price_centavos  BIGINT NOT NULL CHECK (price_centavos > 0),
    updated_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (provider_id, tuss_code)
);
