-- writer.sql: one business change and its event, in one statement and so in
-- one transaction: both commit or neither does. The relay publishes the event
-- to topic "orders", key "order-<id>", once the transaction has committed.
WITH new_order AS (
    INSERT INTO shop.orders (status) VALUES ('new') RETURNING id, status, created_at
)
SELECT o.id AS order_id,
       outbox.publish('orders',
                      'order-' || o.id,
                      jsonb_build_object('id', o.id, 'status', o.status, 'created_at', o.created_at),
                      jsonb_build_object('source', 'examples/writer.sql')) AS event_id
FROM new_order AS o;
