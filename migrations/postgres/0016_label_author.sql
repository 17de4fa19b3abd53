-- Who made each label (issue 11): the person or token that decided a review or set the label by
-- hand (`person:{id}`, `analyst`, `admin`), or `celcoin` for chargebacks and MED claims. NULL for
-- labels made before this column. Never edit once applied.

ALTER TABLE payment_labels ADD COLUMN labelled_by TEXT;
