-- 00_install.sql: what sql/install.sql leaves behind. run.sh ran it twice at
-- once and then a third time; public.install_check holds what it saw
-- before the third run.
BEGIN;
SELECT plan(48);

-- Versions ------------------------------------------------------------------
SELECT has_table('outbox', 'schema_version', 'outbox.schema_version exists');
SELECT results_eq(
    'SELECT version FROM outbox.schema_version ORDER BY version',
    'SELECT generate_series(1, (SELECT migration_files::int FROM public.install_check))',
    'every migration file is recorded once, numbered from 1 without gaps'
);
SELECT is((SELECT versions_before_rerun FROM public.install_check),
          (SELECT migration_files FROM public.install_check),
          'two installers at once applied each migration exactly once');
SELECT is(public.install_fingerprint(), (SELECT fingerprint_before_rerun FROM public.install_check),
          'running install.sql again changed no function, privilege, table or version row');
SELECT is(outbox.version(), (SELECT max(version) FROM outbox.schema_version),
          'outbox.version() is the latest applied migration');
SELECT ok((SELECT bool_and(applied_at IS NOT NULL AND description <> '') FROM outbox.schema_version),
          'every version row has a description and a time');

-- outbox.event --------------------------------------------------------------
SELECT has_table('outbox', 'event', 'outbox.event exists');
SELECT results_eq(
    $$SELECT a.attname::text COLLATE "default", format_type(a.atttypid, a.atttypmod), a.attnotnull,
             pg_get_expr(d.adbin, d.adrelid) COLLATE "default", a.attidentity::text
      FROM pg_attribute AS a
      LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE a.attrelid = 'outbox.event'::regclass AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attnum$$,
    $$VALUES ('id', 'bigint', true, NULL, 'a'),
             ('txid', 'xid8', true, 'pg_current_xact_id()', ''),
             ('topic', 'outbox.event_topic', true, NULL, ''),
             ('key', 'bytea', false, NULL, ''),
             ('payload', 'bytea', false, NULL, ''),
             ('headers', 'outbox.event_headers', false, NULL, ''),
             ('created_at', 'timestamp with time zone', true, 'now()', '')$$,
    'outbox.event has the contract''s columns, types, defaults and identity'
);
-- Partitioned by blocks of 65536 ids into four partitions (schema version
-- 7; eight in versions 5 and 6): LIST on block % 4. A partitioned table's unique key would have to
-- contain the partition key's columns, and an expression may not be one: the
-- parent has no primary key, each partition a unique index on id (equal ids
-- always fall into the same partition, so ids are unique table-wide).
SELECT is(pg_get_partkeydef('outbox.event'::regclass), 'LIST ((((id / 65536) % (4)::bigint)))',
          'outbox.event is partitioned by LIST on its id''s block of 65536 modulo 4');
SELECT results_eq(
    $$SELECT c.relname::text COLLATE "default", pg_get_expr(c.relpartbound, c.oid) COLLATE "default",
             c.relkind::text, c.relispartition
      FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'outbox.event'::regclass
      ORDER BY 1$$,
    $$SELECT format('event_p%s', k), format('FOR VALUES IN (''%s'')', k), 'r', true
      FROM generate_series(0, 3) AS k$$,
    'it has exactly the four partitions event_p0..event_p3, one for each remainder (no default partition)');
SELECT is_empty(
    $$SELECT conname FROM pg_constraint WHERE conrelid = 'outbox.event'::regclass AND contype IN ('p', 'u')$$,
    'the parent has no primary or unique key (one cannot be declared on an expression partition key)');
SELECT results_eq(
    $$SELECT c.relname::text COLLATE "default", x.indexrelid::regclass::text,
             x.indisunique, x.indisvalid, pg_get_indexdef(x.indexrelid, 1, true)
      FROM pg_inherits AS i
      JOIN pg_class AS c ON c.oid = i.inhrelid
      JOIN pg_index AS x ON x.indrelid = c.oid
      WHERE i.inhparent = 'outbox.event'::regclass AND x.indisunique
      ORDER BY 1$$,
    $$SELECT format('event_p%s', k), format('outbox.event_p%s_id_key', k), true, true, 'id'
      FROM generate_series(0, 3) AS k$$,
    'every partition has exactly one unique index, valid, on id alone');
SELECT has_index('outbox', 'event', 'event_txid_idx', ARRAY['txid'], 'outbox.event has an index on txid');
SELECT is((SELECT count(*)::int FROM pg_inherits AS i JOIN pg_index AS x ON x.indexrelid = i.inhrelid
           WHERE i.inhparent = 'outbox.event_txid_idx'::regclass AND x.indisvalid),
          4, '... in every partition');
SELECT is_empty(
    $$SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'outbox.event'::regclass
        AND NOT c.reloptions @> ARRAY['autovacuum_vacuum_insert_threshold=-1',
                                      'autovacuum_vacuum_scale_factor=0.01',
                                      'autovacuum_analyze_scale_factor=0.01']$$,
    'every partition: no insert-triggered vacuum (its rows leave by TRUNCATE), vacuum and analyze at 1%');
SELECT is_empty(
    $$SELECT conname FROM pg_constraint WHERE conrelid = 'outbox.event'::regclass AND contype = 'c'$$,
    'outbox.event has no table CHECK constraint (a table''s CHECKs are planned again by every statement)'
);
SELECT results_eq(
    $$SELECT t.typname::text COLLATE "default", format_type(t.typbasetype, t.typtypmod),
             c.conname::text COLLATE "default", c.convalidated
      FROM pg_type AS t JOIN pg_constraint AS c ON c.contypid = t.oid
      WHERE t.typnamespace = 'outbox'::regnamespace AND t.typtype = 'd'
      ORDER BY 1, 3$$,
    $$VALUES ('event_headers', 'jsonb', 'event_headers_string_object', true),
             ('event_topic', 'text', 'event_topic_legal_chars', true),
             ('event_topic', 'text', 'event_topic_max_length', true),
             ('event_topic', 'text', 'event_topic_not_dot', true),
             ('event_topic', 'text', 'event_topic_not_empty', true)$$,
    'topic and headers are validated by the named CHECK constraints of two domains (no reserved topic yet)'
);

-- outbox.relay_state --------------------------------------------------------
SELECT has_table('outbox', 'relay_state', 'outbox.relay_state exists');
SELECT results_eq(
    $$SELECT a.attname::text COLLATE "default", format_type(a.atttypid, a.atttypmod), a.attnotnull
      FROM pg_attribute AS a
      WHERE a.attrelid = 'outbox.relay_state'::regclass AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attnum$$,
    $$VALUES ('name', 'text', true), ('owner', 'text', false), ('generation', 'bigint', true),
             ('lease_expires_at', 'timestamp with time zone', false), ('batch_seq', 'bigint', true),
             ('pos_done', 'pg_snapshot', true), ('pos_next', 'pg_snapshot', false),
             ('pos_after_id', 'bigint', true), ('created_at', 'timestamp with time zone', true),
             ('updated_at', 'timestamp with time zone', true),
             ('advanced_at', 'timestamp with time zone', false)$$,
    'outbox.relay_state has the contract''s columns'
);
SELECT col_is_pk('outbox', 'relay_state', 'name', 'outbox.relay_state.name is the primary key');

-- outbox.event_partition: rotate()'s state, one row per partition -----------
SELECT results_eq(
    $$SELECT a.attname::text COLLATE "default", format_type(a.atttypid, a.atttypmod), a.attnotnull
      FROM pg_attribute AS a
      WHERE a.attrelid = 'outbox.event_partition'::regclass AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attnum$$,
    $$VALUES ('part', 'integer', true), ('done_block', 'bigint', true),
             ('tried_at', 'timestamp with time zone', true)$$,
    'outbox.event_partition has a partition number, the newest block truncated, the last try');
SELECT results_eq(
    'SELECT part, done_block, tried_at FROM outbox.event_partition ORDER BY part',
    $$SELECT k, -1::bigint, '-infinity'::timestamptz FROM generate_series(0, 3) AS k$$,
    'a fresh install has one row per partition: nothing truncated, never tried');

-- Functions: the API the relay calls by name. Any change of a name, an
-- argument or a result column breaks the C side: it must show up here.
SELECT results_eq(
    $$SELECT p.oid::regprocedure::text, pg_get_function_result(p.oid)
      FROM pg_proc AS p
      WHERE p.pronamespace = 'outbox'::regnamespace
      ORDER BY 1$$,
    $$VALUES
      ('outbox.advance(text,bigint,bigint,text,text,bigint,bigint)', 'bigint'),
      ('outbox.cleanup(text)', 'integer'),
      ('outbox.delete_relayed()', 'bigint'),
      ('outbox.fetch_page(pg_snapshot,pg_snapshot,bigint,integer,bigint)',
       'TABLE(id bigint, topic text, key bytea, payload bytea, header_names text[], header_values text[], created_ms bigint)'),
      ('outbox.fetch_page_bounds(pg_snapshot,pg_snapshot,bigint,integer,bigint)', 'bigint[]'),
      ('outbox.headers_bytes(jsonb)', 'integer'),
      ('outbox.headers_valid(jsonb)', 'boolean'),
      ('outbox.lag(text)', 'TABLE(rows bigint, oldest_age_ms bigint)'),
      ('outbox.lease_acquire(text,text,integer,boolean)',
       'TABLE(acquired boolean, generation bigint, owner text, expires_in_ms bigint)'),
      ('outbox.lease_release(text,bigint)', 'boolean'),
      ('outbox.lease_renew(text,bigint,integer)', 'boolean'),
      ('outbox.notify_disable()', 'boolean'),
      ('outbox.notify_enable()', 'boolean'),
      ('outbox.notify_enabled()', 'boolean'),
      ('outbox.notify_event()', 'trigger'),
      ('outbox.partition_unrelayed(regclass)', 'boolean'),
      ('outbox.position_get(text)',
       'TABLE(generation bigint, batch_seq bigint, pos_done text, pos_next text, pos_after_id bigint)'),
      ('outbox.position_reset(text,bigint,text,bigint)',
       'TABLE(generation bigint, batch_seq bigint, pos_done text, rows_restamped bigint, rows_deleted bigint)'),
      ('outbox.publish(text,bytea,bytea,jsonb)', 'bigint'),
      ('outbox.publish(text,text,jsonb,jsonb)', 'bigint'),
      ('outbox.publish(text,text,text,jsonb)', 'bigint'),
      ('outbox.purge(text,bigint,integer)', 'bigint'),
      ('outbox.read_page(pg_snapshot,pg_snapshot,bigint,integer,bigint)',
       'TABLE(id bigint, topic text, key bytea, payload bytea, header_names text[], header_values text[], created_ms bigint, window_end boolean)'),
      ('outbox.refuse_reserved_topic(text)', 'boolean'),
      ('outbox.relay_awake(boolean)', 'boolean'),
      ('outbox.relay_forget(text)', 'boolean'),
      ('outbox.relayed(xid8,bigint,pg_snapshot,pg_snapshot,bigint)', 'boolean'),
      ('outbox.reserve_topics(text,bigint,text[])', 'integer'),
      ('outbox.reserved_topic_apply()', 'text[]'),
      ('outbox.reserved_topic_changed()', 'trigger'),
      ('outbox.rotate(bigint,boolean,boolean)', 'integer'),
      ('outbox.status(text)',
       'TABLE(name text, owner text, generation bigint, lease_expires_at timestamp with time zone, lease_expires_in_ms bigint, batch_seq bigint, pos_done text, pos_next text, pos_after_id bigint, created_at timestamp with time zone, updated_at timestamp with time zone, advanced_at timestamp with time zone, lag_rows bigint, lag_oldest_age_ms bigint)'),
      ('outbox.version()', 'integer'),
      ('outbox.window_open(text)', 'text')$$,
    'outbox has exactly the documented functions, with these arguments and results'
);
SELECT results_eq(
    $$SELECT p.proname::text COLLATE "default", pg_get_function_arguments(p.oid)
      FROM pg_proc AS p
      WHERE p.pronamespace = 'outbox'::regnamespace
        AND p.proname IN ('lease_acquire', 'lease_renew', 'lease_release', 'position_get',
                          'window_open', 'fetch_page', 'read_page', 'advance', 'cleanup', 'purge', 'lag', 'status',
                          'relay_forget', 'reserve_topics', 'position_reset')
      ORDER BY 1$$,
    $$VALUES
      ('advance', 'p_name text, p_generation bigint, p_batch_seq bigint, p_done text, p_next text, p_after_id bigint, p_retention_ms bigint DEFAULT 0'),
      ('cleanup', 'p_name text'),
      ('fetch_page', 'p_done pg_snapshot, p_next pg_snapshot, p_after_id bigint, p_max_rows integer, p_max_bytes bigint'),
      ('lag', 'p_name text'),
      ('lease_acquire', 'p_name text, p_owner text, p_ttl_ms integer, p_allow_other_names boolean DEFAULT false'),
      ('lease_release', 'p_name text, p_generation bigint'),
      ('lease_renew', 'p_name text, p_generation bigint, p_ttl_ms integer'),
      ('position_get', 'p_name text'),
      ('position_reset', 'p_name text, p_generation bigint, p_existing text, p_batch_seq bigint DEFAULT NULL::bigint'),
      ('purge', 'p_name text, p_retention_ms bigint, p_max_rows integer'),
      ('read_page', 'p_done pg_snapshot, p_next pg_snapshot, p_after_id bigint, p_max_rows integer, p_max_bytes bigint'),
      ('relay_forget', 'p_name text'),
      ('reserve_topics', 'p_name text, p_generation bigint, p_topics text[]'),
      ('status', 'p_name text'),
      ('window_open', 'p_name text')$$,
    'the relay''s functions keep the contract''s argument names and defaults'
);

-- Functions that write relay_state run as their owner with a fixed
-- search_path; the rest run with the caller's rights.
SELECT results_eq(
    $$SELECT p.proname::text COLLATE "default" FROM pg_proc AS p
      WHERE p.pronamespace = 'outbox'::regnamespace AND p.prosecdef ORDER BY 1$$,
    $$VALUES ('advance'), ('cleanup'), ('lag'), ('lease_acquire'), ('lease_release'), ('lease_renew'),
             ('notify_disable'), ('notify_enable'), ('position_get'), ('position_reset'),
             ('purge'), ('relay_forget'), ('reserve_topics'), ('reserved_topic_apply'), ('status'),
             ('window_open')$$,
    'exactly the state-writing and state-reading functions are SECURITY DEFINER'
);
SELECT is_empty(
    $$SELECT p.proname FROM pg_proc AS p
      WHERE p.pronamespace = 'outbox'::regnamespace AND p.prosecdef
        AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)$$,
    'every SECURITY DEFINER function pins search_path to pg_catalog, pg_temp'
);
SELECT is(
    (SELECT provolatile::text FROM pg_proc WHERE oid = 'outbox.headers_valid(jsonb)'::regprocedure),
    'i', 'headers_valid() is IMMUTABLE (it backs a domain''s CHECK constraint)');
SELECT is(
    (SELECT provolatile::text FROM pg_proc
     WHERE oid = 'outbox.fetch_page(pg_snapshot,pg_snapshot,bigint,integer,bigint)'::regprocedure),
    's', 'fetch_page() is STABLE');
SELECT is(
    (SELECT l.lanname::text FROM pg_proc AS p JOIN pg_language AS l ON l.oid = p.prolang
     WHERE p.oid = 'outbox.fetch_page(pg_snapshot,pg_snapshot,bigint,integer,bigint)'::regprocedure),
    'sql', 'fetch_page() is LANGUAGE sql (inlined into the caller''s query)');

-- fetch_page() is inlined: the plan of a call shows outbox.event itself, no
-- Function Scan that would materialize the page. (Which scan it uses depends
-- on the table's size and statistics: bench/sql/ looks at that.)
\ir lib/windows.sql
SELECT unalike(pg_temp.plan_of($$SELECT * FROM outbox.fetch_page('1:1:', '5:5:', 0, 10, 1000)$$),
              '%Function Scan on fetch_page%', 'fetch_page() is inlined into the calling query');
-- A backlog in a table that was never analyzed: the page is still read by
-- the id index of each partition, merged in id order (the partitions'
-- blocks interleave by id), with no sort of the whole page.
INSERT INTO outbox.event (txid, topic, payload)
SELECT '3', 'plan', convert_to(repeat('x', 200), 'UTF8') FROM generate_series(1, 30000);
SELECT is((SELECT count(*)::int FROM pg_stats WHERE schemaname = 'outbox' AND tablename = 'event'), 0,
          '(outbox.event has no statistics)');
SELECT is((SELECT count(*)::int
           FROM regexp_matches(pg_temp.plan_of($$SELECT * FROM outbox.fetch_page('1:1:', '5:5:', 12345, 10000, 16777216)$$),
                               'Index Scan using event_p[0-7]_id_key on event_p[0-7]', 'g')),
          4, 'a backlog page is read by the id index of every partition, even on a table without statistics');
SELECT alike(pg_temp.plan_of($$SELECT * FROM outbox.fetch_page('1:1:', '5:5:', 12345, 10000, 16777216)$$),
             E'%Merge Append\n%Sort Key: e.id\n%', '... merged in id order (Merge Append)');
SELECT doesnt_match(pg_temp.plan_of($$SELECT * FROM outbox.fetch_page('1:1:', '5:5:', 12345, 10000, 16777216)$$),
                    '(^|\n|->  )(Incremental )?Sort\n|Seq Scan', '... with no sort and no sequential scan');

-- Roles ---------------------------------------------------------------------
SELECT has_role('outbox_relay', 'role outbox_relay exists');
SELECT has_role('outbox_writer', 'role outbox_writer exists');
SELECT is((SELECT rolcanlogin FROM pg_roles WHERE rolname = 'outbox_relay'), false,
          'outbox_relay is NOLOGIN (grant it to a login role)');
SELECT is((SELECT rolcanlogin FROM pg_roles WHERE rolname = 'outbox_writer'), false,
          'outbox_writer is NOLOGIN (grant it to a login role)');
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc AS p
      WHERE p.pronamespace = 'outbox'::regnamespace
        AND has_function_privilege('public', p.oid, 'EXECUTE')
        AND p.proname NOT IN ('headers_valid', 'headers_bytes', 'relayed', 'version', 'notify_enabled',
                              'refuse_reserved_topic')$$,
    'PUBLIC may execute only the pure helper functions (and the reserved-topic refusal, which writers'' rows call)'
);

-- The contract's constants ---------------------------------------------------
SELECT is(outbox.version(), 7, 'schema version 7');
SELECT is((SELECT count(*)::int FROM outbox.event WHERE topic <> 'plan'), 0, 'a fresh install has no outbox rows');
SELECT is((SELECT count(*)::int FROM outbox.relay_state), 0, 'a fresh install has no relay');
SELECT is(outbox.notify_enabled(), false, 'NOTIFY is off after install');
SELECT ok(outbox.relayed('5', 1, '10:10:', NULL, 0), 'relayed(): below done''s xmin is relayed');
SELECT ok(NOT outbox.relayed('12', 1, '10:20:12', NULL, 0), 'relayed(): done''s xip is not');
SELECT ok(outbox.relayed('25', 7, '10:20:', '20:30:', 7), 'relayed(): in the open window up to after_id');
SELECT ok(NOT outbox.relayed('25', 8, '10:20:', '20:30:', 7), 'relayed(): beyond after_id is not');
SELECT ok(NOT outbox.relayed('25', 1, '10:20:', '20:30:25', 7), 'relayed(): in next''s xip is not');

SELECT * FROM finish();
ROLLBACK;
