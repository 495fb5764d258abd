-- 10_event.sql: what outbox.event accepts and refuses, and publish() with
-- each of its overloads.
BEGIN;
SELECT plan(48);

-- Good rows ----------------------------------------------------------------
SELECT lives_ok(
    $$INSERT INTO outbox.event (topic, key, payload, headers)
      VALUES ('orders.v1_created-EU', 'k', 'p', '{"trace": "abc", "": "empty name is a name"}')$$,
    'a plain INSERT of topic, key, payload, headers works');
SELECT is((SELECT txid FROM outbox.event WHERE topic = 'orders.v1_created-EU'), pg_current_xact_id(),
          'txid defaults to the writer''s transaction id');
SELECT is((SELECT created_at FROM outbox.event WHERE topic = 'orders.v1_created-EU'), now(),
          'created_at defaults to the transaction''s start');
SELECT lives_ok($$INSERT INTO outbox.event (topic) VALUES ('t')$$,
                'key, payload and headers may be NULL (a tombstone without key is still a record)');
SELECT lives_ok($$INSERT INTO outbox.event (topic, headers) VALUES ('t', '{}')$$,
                'an empty header object is fine');
SELECT lives_ok(format($$INSERT INTO outbox.event (topic) VALUES (%L)$$, repeat('a', 249)),
                'a 249-character topic is legal');
SELECT lives_ok($$INSERT INTO outbox.event (topic) VALUES ('...')$$, 'a topic of three dots is legal');

-- Bad rows: each names the rule it breaks -----------------------------------
-- (The NOT NULL check runs in the partition the row is routed to, by its id:
-- the message names that partition.)
SELECT throws_ok($$INSERT INTO outbox.event (topic) VALUES (NULL)$$, '23502', NULL, 'NULL topic: 23502');
SELECT throws_like($$INSERT INTO outbox.event (topic) VALUES (NULL)$$,
                   'null value in column "topic" of relation "event\_p_" violates not-null constraint',
                   '... naming the column (and the partition of outbox.event the row went to)');
SELECT throws_ok($$INSERT INTO outbox.event (topic) VALUES ('')$$,
                 '23514', 'value for domain outbox.event_topic violates check constraint "event_topic_not_empty"',
                 'empty topic: 23514 event_topic_not_empty');
SELECT throws_ok($$INSERT INTO outbox.event (topic) VALUES ('a b')$$,
                 '23514', 'value for domain outbox.event_topic violates check constraint "event_topic_legal_chars"',
                 'a space in the topic: event_topic_legal_chars');
SELECT throws_ok($$INSERT INTO outbox.event (topic) VALUES ('orders/eu')$$,
                 '23514', 'value for domain outbox.event_topic violates check constraint "event_topic_legal_chars"',
                 'a slash in the topic: event_topic_legal_chars');
SELECT throws_ok($$INSERT INTO outbox.event (topic) VALUES ('zamówienia')$$,
                 '23514', 'value for domain outbox.event_topic violates check constraint "event_topic_legal_chars"',
                 'a non-ASCII letter in the topic: event_topic_legal_chars');
SELECT throws_ok(format($$INSERT INTO outbox.event (topic) VALUES (%L)$$, repeat('a', 250)),
                 '23514', 'value for domain outbox.event_topic violates check constraint "event_topic_max_length"',
                 'a 250-character topic: event_topic_max_length');
SELECT throws_ok($$INSERT INTO outbox.event (topic) VALUES ('.')$$,
                 '23514', 'value for domain outbox.event_topic violates check constraint "event_topic_not_dot"',
                 'topic ".": event_topic_not_dot');
SELECT throws_ok($$INSERT INTO outbox.event (topic) VALUES ('..')$$,
                 '23514', 'value for domain outbox.event_topic violates check constraint "event_topic_not_dot"',
                 'topic "..": event_topic_not_dot');

SELECT throws_ok(format($$INSERT INTO outbox.event (topic, headers) VALUES ('t', %L)$$, h),
                 '23514', 'value for domain outbox.event_headers violates check constraint "event_headers_string_object"',
                 format('headers %s: event_headers_string_object', h))
FROM (VALUES ('{"a": 1}'), ('{"a": null}'), ('{"a": true}'), ('{"a": {"b": "c"}}'),
             ('{"a": ["b"]}'), ('{"a": "ok", "b": 2}'), ('["a", "b"]'), ('"a"'), ('null')) AS t(h);

-- The rules hold for every way a value gets into the columns: the domains
-- check each value converted to them.
SELECT throws_ok($$INSERT INTO outbox.event (topic, headers) SELECT t, NULL FROM (VALUES ('ok'), ('not ok')) AS v(t)$$,
                 '23514', 'value for domain outbox.event_topic violates check constraint "event_topic_legal_chars"',
                 'INSERT ... SELECT: each row is checked');
SELECT throws_ok($$UPDATE outbox.event SET topic = 'a/b' WHERE topic = 't'$$,
                 '23514', 'value for domain outbox.event_topic violates check constraint "event_topic_legal_chars"',
                 'UPDATE ... SET topic is checked');
SELECT throws_ok($$UPDATE outbox.event SET headers = '{"a": 1}' WHERE topic = 't'$$,
                 '23514', 'value for domain outbox.event_headers violates check constraint "event_headers_string_object"',
                 'UPDATE ... SET headers is checked');
PREPARE pg_temp_ins(text, jsonb) AS INSERT INTO outbox.event (topic, headers) VALUES ($1, $2);
SELECT throws_ok($$EXECUTE pg_temp_ins('.', NULL)$$, '23514',
                 'value for domain outbox.event_topic violates check constraint "event_topic_not_dot"',
                 'a prepared INSERT with parameters is checked (topic)');
SELECT throws_ok($$EXECUTE pg_temp_ins('t', '[1]')$$, '23514',
                 'value for domain outbox.event_headers violates check constraint "event_headers_string_object"',
                 'a prepared INSERT with parameters is checked (headers)');
DEALLOCATE pg_temp_ins;

SELECT ok(outbox.headers_valid(NULL), 'headers_valid(NULL)');
SELECT ok(outbox.headers_valid('{"a": "1", "b": ""}'), 'headers_valid(object of strings)');
SELECT ok(NOT outbox.headers_valid('{"a": 1}'), 'headers_valid(object with a number) is false');

SELECT throws_ok($$INSERT INTO outbox.event (id, topic) VALUES (1, 't')$$, '428C9', NULL,
                 'id is GENERATED ALWAYS: a writer cannot choose it');

-- publish() -----------------------------------------------------------------
CREATE TEMP TABLE published (overload text, id bigint);

INSERT INTO published SELECT 'bytea', outbox.publish('t', '\x6b'::bytea, '\x00ff'::bytea);
SELECT results_eq(
    $$SELECT e.topic::text, e.key, e.payload, e.headers::jsonb FROM outbox.event AS e
      JOIN published AS p ON p.id = e.id WHERE p.overload = 'bytea'$$,
    $$VALUES ('t'::text, '\x6b'::bytea, '\x00ff'::bytea, NULL::jsonb)$$,
    'publish(text, bytea, bytea) stores the bytes as given and returns the new id');

INSERT INTO published SELECT 'untyped', outbox.publish('t', 'k', '\x41');
SELECT results_eq(
    $$SELECT e.key, e.payload FROM outbox.event AS e
      JOIN published AS p ON p.id = e.id WHERE p.overload = 'untyped'$$,
    $$VALUES ('\x6b'::bytea, convert_to('\x41', 'UTF8'))$$,
    'publish(''t'', ''k'', ''\x41'') with untyped literals resolves to the text overload');

INSERT INTO published SELECT 'bytea key, untyped payload', outbox.publish('t', 'k'::bytea, '\x41');
SELECT is(
    (SELECT e.payload FROM outbox.event AS e JOIN published AS p ON p.id = e.id
     WHERE p.overload = 'bytea key, untyped payload'),
    '\x41'::bytea,
    'a bytea key makes an untyped payload a bytea literal (the bytea overload)');

INSERT INTO published SELECT 'text', outbox.publish('t', 'ключ'::text, 'значение'::text, '{"h": "v"}');
SELECT results_eq(
    $$SELECT e.key, e.payload, e.headers::jsonb FROM outbox.event AS e
      JOIN published AS p ON p.id = e.id WHERE p.overload = 'text'$$,
    $$VALUES ('\xd0bad0bbd18ed187'::bytea, convert_to('значение', 'UTF8'), '{"h": "v"}'::jsonb)$$,
    'publish(text, text, text, jsonb) stores key and payload as UTF-8 bytes, and the headers');

INSERT INTO published SELECT 'jsonb', outbox.publish('t', 'k', '{"b": [1, 2], "a": "x"}'::jsonb);
SELECT is(
    (SELECT convert_from(e.payload, 'UTF8') FROM outbox.event AS e
     JOIN published AS p ON p.id = e.id WHERE p.overload = 'jsonb'),
    '{"a": "x", "b": [1, 2]}',
    'publish(text, text, jsonb) stores the jsonb''s canonical text as UTF-8');

INSERT INTO published SELECT 'untyped json', outbox.publish('t', 'k', '{"b": 1,  "a": 2}');
SELECT is(
    (SELECT convert_from(e.payload, 'UTF8') FROM outbox.event AS e
     JOIN published AS p ON p.id = e.id WHERE p.overload = 'untyped json'),
    '{"b": 1,  "a": 2}',
    'JSON text as an untyped literal goes through the text overload, byte for byte');

INSERT INTO published SELECT 'nulls', outbox.publish('t', NULL, NULL);
SELECT results_eq(
    $$SELECT e.key, e.payload FROM outbox.event AS e
      JOIN published AS p ON p.id = e.id WHERE p.overload = 'nulls'$$,
    $$VALUES (NULL::bytea, NULL::bytea)$$,
    'publish(''t'', NULL, NULL) resolves (text overload) and stores NULL key and payload');

INSERT INTO published
SELECT 'named', outbox.publish(topic => 'named', key => '\x01'::bytea, payload => '\x02'::bytea,
                               headers => '{"x": "y"}');
SELECT results_eq(
    $$SELECT e.topic::text, e.key, e.payload, e.headers::jsonb FROM outbox.event AS e
      JOIN published AS p ON p.id = e.id WHERE p.overload = 'named'$$,
    $$VALUES ('named'::text, '\x01'::bytea, '\x02'::bytea, '{"x": "y"}'::jsonb)$$,
    'publish() accepts named arguments topic, key, payload, headers');

SELECT is((SELECT count(DISTINCT id)::int FROM published), (SELECT count(*)::int FROM published),
          'each publish() returned its own id');
SELECT ok((SELECT bool_and(e.txid = pg_current_xact_id()) FROM outbox.event AS e
           JOIN published AS p ON p.id = e.id),
          'publish() rows carry the caller''s transaction id');

SELECT throws_ok($$SELECT outbox.publish('bad topic', 'k', 'v')$$, '23514',
                 'value for domain outbox.event_topic violates check constraint "event_topic_legal_chars"',
                 'publish() is held to the same checks');
SELECT throws_ok($$SELECT outbox.publish('t', 'k', 'v', '{"n": 1}')$$, '23514',
                 'value for domain outbox.event_headers violates check constraint "event_headers_string_object"',
                 'publish() refuses headers that are not strings');
SELECT throws_ok($$SELECT outbox.publish(NULL, 'k', 'v')$$, '23502', NULL,
                 'publish() refuses a NULL topic');
SELECT throws_ok($$SELECT outbox.publish('t', 'k', '{not json'::jsonb)$$, '22P02', NULL,
                 'the jsonb overload needs valid JSON');

SELECT * FROM finish();
ROLLBACK;
