import Foundation
import Logging
import PostgresNIO

/// `--database postgresql://user[:password]@host:port/db`: the one store every replica shares.
/// The password may instead come from PGPASSWORD, which keeps it out of `ps`.
public struct DatabaseURL: Sendable, CustomStringConvertible {
    public var user: String
    public var password: String?
    public var host: String
    public var port: Int
    public var database: String
    public var requireTLS: Bool

    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    public init(_ text: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        guard let url = URLComponents(string: text), ["postgresql", "postgres"].contains(url.scheme ?? "") else {
            throw Invalid(description: "--database: expected postgresql://user@host:port/db")
        }
        guard let user = url.user, !user.isEmpty else { throw Invalid(description: "--database: the URL names no user (postgresql://USER@host:port/db)") }
        guard let host = url.host, !host.isEmpty else { throw Invalid(description: "--database: the URL names no host") }
        let database = String(url.path.drop { $0 == "/" })
        guard !database.isEmpty else { throw Invalid(description: "--database: the URL names no database (postgresql://user@host:port/DB)") }
        self.user = user
        self.password = url.password ?? environment["PGPASSWORD"]
        self.host = host
        self.port = url.port ?? 5432
        self.database = database
        let mode = url.queryItems?.first { $0.name == "sslmode" }?.value ?? "disable"
        guard ["disable", "require"].contains(mode) else { throw Invalid(description: "--database: sslmode must be disable or require") }
        requireTLS = mode == "require"
    }

    /// Without the password: what logs and errors may show.
    public var description: String { "postgresql://\(user)@\(host):\(port)/\(database)" }

    public func configuration() throws -> PostgresClient.Configuration {
        PostgresClient.Configuration(host: host, port: port, username: user, password: password, database: database,
                                     tls: requireTLS ? .require(.makeClientConfiguration()) : .disable)
    }
}

/// The schema, changed only by these named migrations, applied in order, each once, in its own
/// transaction. Replicas starting together take an advisory lock, so one applies and the others
/// find the work done. A database migrated by a newer server is refused, not guessed at.
public enum Migrations {
    public static let all: [(name: String, statements: [String])] = [
        ("001-initial", [
            """
            CREATE TABLE api_tokens (
              id uuid PRIMARY KEY, name text NOT NULL, role text NOT NULL CHECK (role IN ('viewer', 'responder', 'approver', 'admin')),
              token_hash text NOT NULL UNIQUE, created_at timestamptz NOT NULL DEFAULT now(), revoked_at timestamptz)
            """,
            """
            CREATE TABLE enroll_secrets (
              id uuid PRIMARY KEY, secret_hash text NOT NULL UNIQUE, tags jsonb NOT NULL, expires_at timestamptz,
              uses_left integer, created_at timestamptz NOT NULL DEFAULT now(), revoked_at timestamptz)
            """,
            """
            CREATE TABLE hosts (
              id uuid PRIMARY KEY, hostname text NOT NULL, machine_id text NOT NULL, addresses jsonb NOT NULL, agent_version text NOT NULL,
              tags jsonb NOT NULL, credential_hash text NOT NULL UNIQUE, enroll_secret uuid REFERENCES enroll_secrets (id),
              enrolled_at timestamptz NOT NULL DEFAULT now(), revoked_at timestamptz, last_seen timestamptz, status jsonb,
              desired_state text NOT NULL DEFAULT 'released' CHECK (desired_state IN ('isolated', 'released')),
              generation bigint NOT NULL DEFAULT 0, desired_intent uuid, desired_reason text NOT NULL DEFAULT '',
              desired_by text NOT NULL DEFAULT '', desired_at timestamptz NOT NULL DEFAULT now(),
              observed_state text CHECK (observed_state IN ('isolated', 'released')), observed_generation bigint NOT NULL DEFAULT 0,
              log_head bigint NOT NULL DEFAULT 0, log_problems integer NOT NULL DEFAULT 0)
            """,
            """
            CREATE TABLE intents (
              id uuid PRIMARY KEY, host_id uuid NOT NULL REFERENCES hosts (id), generation bigint NOT NULL,
              state text NOT NULL CHECK (state IN ('isolated', 'released')), previous_state text NOT NULL,
              status text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'superseded')),
              requested_by text NOT NULL, token_id uuid, requested_at timestamptz NOT NULL DEFAULT now(), completed_at timestamptz,
              reason text NOT NULL, external_id text, error text, idempotency_key text)
            """,
            "CREATE UNIQUE INDEX intents_idempotency ON intents (token_id, idempotency_key) WHERE idempotency_key IS NOT NULL",
            "CREATE INDEX intents_by_host ON intents (host_id, requested_at)",
            "CREATE INDEX intents_pending ON intents (host_id) WHERE status = 'pending'",
            """
            CREATE TABLE decision_log (
              host_id uuid NOT NULL REFERENCES hosts (id), sequence bigint NOT NULL, entry text NOT NULL, hash text NOT NULL,
              received_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (host_id, sequence))
            """,
            """
            CREATE TABLE log_problems (
              id bigserial PRIMARY KEY, host_id uuid NOT NULL REFERENCES hosts (id), sequence bigint NOT NULL, problem text NOT NULL,
              detected_at timestamptz NOT NULL DEFAULT now())
            """,
            """
            CREATE TABLE host_flows (
              host_id uuid NOT NULL REFERENCES hosts (id), flow_key text NOT NULL, record text NOT NULL, last_seen text NOT NULL,
              connections bigint NOT NULL, packets bigint NOT NULL, bytes bigint NOT NULL, PRIMARY KEY (host_id, flow_key))
            """,
            """
            CREATE TABLE audit_log (
              id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), actor text NOT NULL, role text, action text NOT NULL,
              target text, detail text NOT NULL, remote text)
            """,
        ]),
        // A local isolation change is known by the decision-log entry that made it (issue 19: a
        // report sent again had made a second intent).
        ("002-local-change-sequence", [
            "ALTER TABLE intents ADD COLUMN local_sequence bigint",
            "CREATE UNIQUE INDEX intents_local_change ON intents (host_id, local_sequence, state) WHERE local_sequence IS NOT NULL",
        ]),
        // Where each tag came from, and secrets that take no tags from the hosts they admit (issue
        // 19: a host could give itself `role=domain-controller`). Hosts enrolled before: a tag the
        // secret has is the secret's, any other the host's.
        ("003-tag-sources", [
            "ALTER TABLE enroll_secrets ADD COLUMN host_tags boolean NOT NULL DEFAULT true",
            "ALTER TABLE hosts ADD COLUMN tag_sources jsonb NOT NULL DEFAULT '{}'",
            """
            UPDATE hosts SET tag_sources = coalesce((
              SELECT jsonb_object_agg(key, CASE WHEN secret.tags ? key THEN 'secret' ELSE 'host' END)
              FROM jsonb_object_keys(hosts.tags) AS key
              LEFT JOIN enroll_secrets secret ON secret.id = hosts.enroll_secret), '{}')
            """,
            "CREATE INDEX hosts_machine_id ON hosts (machine_id)",
        ]),
        // One desired-state document per host (issue 20): the isolation with its extra whitelist,
        // the mode and the effective policy under one generation, instead of four columns that
        // could say "isolated or released" only. Intents get a kind, and a local change is
        // known by its origin instead of a "local: " prefix on its requester.
        ("004-desired-document", [
            "ALTER TABLE hosts ADD COLUMN desired jsonb",
            """
            UPDATE hosts SET desired = jsonb_build_object(
              'generation', generation,
              'isolation', jsonb_build_object(
                'state', desired_state,
                'origin', CASE WHEN desired_by LIKE 'local: %' THEN 'local' ELSE 'server' END,
                'intent_id', desired_intent,
                'reason', desired_reason,
                'requested_by', CASE WHEN desired_by LIKE 'local: %' THEN substr(desired_by, 8) ELSE desired_by END,
                'extra_whitelist', '[]'::jsonb),
              'mode', NULL, 'policy', NULL)
            """,
            """
            ALTER TABLE hosts ALTER COLUMN desired SET NOT NULL, ALTER COLUMN desired SET DEFAULT
              '{"generation": 0, "isolation": {"state": "released", "origin": "server", "intent_id": null, "reason": "", "requested_by": "",
                "extra_whitelist": []}, "mode": null, "policy": null}'::jsonb
            """,
            "ALTER TABLE hosts DROP COLUMN desired_state, DROP COLUMN desired_intent, DROP COLUMN desired_reason, DROP COLUMN desired_by",
            "ALTER TABLE intents ADD COLUMN kind text NOT NULL DEFAULT 'isolation' CHECK (kind IN ('isolation', 'mode'))",
            "ALTER TABLE intents ADD COLUMN origin text NOT NULL DEFAULT 'server' CHECK (origin IN ('server', 'local'))",
            "UPDATE intents SET origin = 'local', requested_by = substr(requested_by, 8) WHERE requested_by LIKE 'local: %'",
            "ALTER TABLE intents DROP CONSTRAINT intents_state_check",
            """
            ALTER TABLE intents ADD CONSTRAINT intents_state_of_kind CHECK (
              (kind = 'isolation' AND state IN ('isolated', 'released')) OR (kind = 'mode' AND state IN ('discovery', 'enforce')))
            """,
            // What a secret's hosts keep open while isolated (seed 000's extra_whitelist).
            "ALTER TABLE enroll_secrets ADD COLUMN extra_whitelist jsonb NOT NULL DEFAULT '[]'",
        ]),
        // Rulesets on the server (issue 20): immutable versions with the review they were
        // approved with, assignments of a version (or the latest) to a selector, and each host's
        // effective policy as its assignments make it now (`assigned_policy`), which reaches the
        // host's document only through a rollout.
        ("005-rulesets", [
            """
            CREATE TABLE ruleset_versions (
              name text NOT NULL, version bigint NOT NULL CHECK (version > 0), content text NOT NULL, sha256 text NOT NULL,
              approved_by text NOT NULL, approved_at timestamptz NOT NULL DEFAULT now(), selector text NOT NULL,
              risks_accepted jsonb NOT NULL DEFAULT '[]', review jsonb NOT NULL, PRIMARY KEY (name, version))
            """,
            // Immutable in the database itself: an approved version is what was reviewed.
            """
            CREATE FUNCTION cordon_immutable_version() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'ruleset versions are immutable: approve a new version instead'; END $$
            """,
            """
            CREATE TRIGGER ruleset_versions_immutable BEFORE UPDATE OR DELETE ON ruleset_versions
              FOR EACH ROW EXECUTE FUNCTION cordon_immutable_version()
            """,
            """
            CREATE TABLE assignments (
              id uuid PRIMARY KEY, ruleset text NOT NULL, version bigint, selector text NOT NULL, created_by text NOT NULL,
              created_at timestamptz NOT NULL DEFAULT now(), removed_by text, removed_at timestamptz)
            """,
            "CREATE INDEX assignments_active ON assignments (ruleset) WHERE removed_at IS NULL",
            "ALTER TABLE hosts ADD COLUMN assigned_policy jsonb",
        ]),
        // Rollouts (issue 20): the waves and each host's step, in the database so that any replica
        // can drive them after another died; `previous` is the host's document (mode and policy)
        // before the step, which a halt puts back.
        ("006-rollouts", [
            """
            CREATE TABLE rollouts (
              id uuid PRIMARY KEY, selector text NOT NULL, mode text NOT NULL CHECK (mode IN ('discovery', 'enforce')),
              waves jsonb NOT NULL, soak_seconds bigint NOT NULL, confirm_window_seconds bigint NOT NULL, max_failures integer NOT NULL,
              state text NOT NULL CHECK (state IN ('running', 'succeeded', 'halted', 'aborted')), current_wave integer NOT NULL DEFAULT 0,
              wave_started_at timestamptz, soak_until timestamptz, failures integer NOT NULL DEFAULT 0, halt_reason text,
              created_by text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())
            """,
            "CREATE INDEX rollouts_running ON rollouts (created_at) WHERE state = 'running'",
            """
            CREATE TABLE rollout_hosts (
              rollout_id uuid NOT NULL REFERENCES rollouts (id), host_id uuid NOT NULL REFERENCES hosts (id), position integer NOT NULL,
              wave integer NOT NULL, state text NOT NULL CHECK (state IN ('waiting', 'skipped', 'applying', 'confirmed', 'failed', 'reverted')),
              generation bigint, detail text, previous jsonb, started_at timestamptz, changed_at timestamptz NOT NULL DEFAULT now(),
              PRIMARY KEY (rollout_id, host_id))
            """,
            "ALTER TABLE intents ADD COLUMN rollout_id uuid, ADD COLUMN rolled_back boolean",
        ]),
        // A fleet propose reads every row of a tier (2M for 1,000 hosts): decoding a JSON
        // document per row took 15 µs of the 19 µs each row cost (issue 20's figures). The key
        // already holds every field but the first sighting and the names, which get columns (the
        // names space-separated: each is a DNS name, checked at upload).
        ("007-flow-columns", [
            "ALTER TABLE host_flows ADD COLUMN first_seen text, ADD COLUMN remote_names text NOT NULL DEFAULT ''",
            """
            UPDATE host_flows SET first_seen = record::jsonb->>'first_seen',
              remote_names = array_to_string(ARRAY(SELECT jsonb_array_elements_text(coalesce(record::jsonb->'remote_names', '[]'))), ' ')
            """,
            "ALTER TABLE host_flows ALTER COLUMN first_seen SET NOT NULL, DROP COLUMN record",
        ]),
        // The console's sessions: an API token exchanged at sign-in for a cookie. Revoking the
        // token ends them (the lookup joins it), so they need no revocation of their own.
        ("008-console-sessions", [
            """
            CREATE TABLE console_sessions (
              secret_hash text PRIMARY KEY, token_id uuid NOT NULL REFERENCES api_tokens (id), csrf text NOT NULL,
              created_at timestamptz NOT NULL DEFAULT now(), expires_at timestamptz NOT NULL)
            """,
            "CREATE INDEX console_sessions_expiry ON console_sessions (expires_at)",
        ]),
        // The map sums flows by where they land (issue 21: classifying 200,000 rows in Swift per
        // request took 10 s; summing them in PostgreSQL, 600 ms). Where a row's far end lands outside the fleet depends on the row
        // alone, so it is worked out at upload; the fleet address it may be is joined per
        // request. Rows stored before are classified by the server at start
        // (`classifyUnclassified`): the standard networks are Swift's to read.
        ("009-flow-map-columns", [
            "ALTER TABLE host_flows ADD COLUMN direction text, ADD COLUMN verdict text, ADD COLUMN service text, ADD COLUMN peer_address text, "
                + "ADD COLUMN peer_node text",
            "CREATE INDEX host_flows_unclassified ON host_flows (host_id) WHERE peer_node IS NULL",
            // Every written row is stamped with its transaction, whoever wrote it: each replica
            // keeps the rows in memory for the map (`FlowMapCache`) and reads what was stamped
            // since its last read.
            "ALTER TABLE host_flows ADD COLUMN changed_txid xid8 NOT NULL DEFAULT '0'",
            """
            CREATE FUNCTION host_flows_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN NEW.changed_txid := pg_current_xact_id(); RETURN NEW; END $$
            """,
            "CREATE TRIGGER host_flows_stamp BEFORE INSERT OR UPDATE ON host_flows FOR EACH ROW EXECUTE FUNCTION host_flows_stamp()",
            "CREATE INDEX host_flows_changed ON host_flows (changed_txid)",
        ]),
        // What the map shows of a host (name, tags, addresses, mode, the policy in force and the
        // one assigned) is stamped with the transaction that changed it, and only then: agents'
        // contacts rewrite the row every few seconds, and each replica keeps the map's hosts in
        // memory (`PostgresHostStore.mapHosts`), reading what was stamped since its last read.
        ("010-host-map-stamp", [
            "ALTER TABLE hosts ADD COLUMN map_changed_txid xid8 NOT NULL DEFAULT '0'",
            """
            CREATE FUNCTION hosts_map_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP = 'INSERT' OR NEW.hostname IS DISTINCT FROM OLD.hostname OR NEW.tags IS DISTINCT FROM OLD.tags
                   OR NEW.addresses IS DISTINCT FROM OLD.addresses OR NEW.status->>'mode' IS DISTINCT FROM OLD.status->>'mode'
                   OR NEW.status->>'ruleset_digest' IS DISTINCT FROM OLD.status->>'ruleset_digest'
                   OR NEW.assigned_policy->>'digest' IS DISTINCT FROM OLD.assigned_policy->>'digest' THEN
                    NEW.map_changed_txid := pg_current_xact_id();
                END IF;
                RETURN NEW;
            END $$
            """,
            "CREATE TRIGGER hosts_map_stamp BEFORE INSERT OR UPDATE ON hosts FOR EACH ROW EXECUTE FUNCTION hosts_map_stamp()",
            "CREATE INDEX hosts_map_changed ON hosts (map_changed_txid)",
        ]),
        // A database restored from an older backup (issue 22): each host's flow head, so that
        // the agent sends again what the restore lost, and the host's re-base above the
        // generation it had applied, which halts the rollouts the backup held as running.
        ("011-restore-rebase", [
            "ALTER TABLE hosts ADD COLUMN flows_head bigint, ADD COLUMN rebased_at timestamptz, ADD COLUMN rebase_detail text",
        ]),
    ]

    public struct Newer: Error, CustomStringConvertible {
        public let names: [String]
        public var description: String {
            "the database has migrations this cordon-server does not know (\(names.joined(separator: ", "))): a newer server migrated it; "
                + "run that version, or restore a backup"
        }
    }

    /// Rows stamped above the cluster's transaction ids (a database restored into another
    /// cluster keeps the old one's stamps) are stamped as written now: else every refresh of the
    /// map's caches would read them again (`StampedCache`). Returns how many were.
    @discardableResult
    public static func restamp(_ client: PostgresClient, logger: Logger) async throws -> Int {
        var count = 0
        for table in ["host_flows SET changed_txid = pg_current_xact_id() WHERE changed_txid", "hosts SET map_changed_txid = pg_current_xact_id() WHERE map_changed_txid"] {
            for try await (changed) in try await client.query(
                "WITH changed AS (UPDATE \(unescaped: table) > pg_current_xact_id() RETURNING 1) SELECT count(*) FROM changed", logger: logger
            ).decode(Int.self) { count += changed }
        }
        return count
    }

    /// Applies what is missing; returns the names applied. `through`: stop after that migration
    /// (the upgrade tests build a database as an older server left it).
    @discardableResult
    public static func migrate(_ client: PostgresClient, logger: Logger, through last: String? = nil) async throws -> [String] {
        try await client.transaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(7411001)", logger: logger)
            try await connection.query("CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                                       logger: logger)
            var applied: Set<String> = []
            for try await name in try await connection.query("SELECT name FROM schema_migrations", logger: logger).decode(String.self) {
                applied.insert(name)
            }
            let unknown = applied.subtracting(all.map(\.name)).sorted()
            guard unknown.isEmpty else { throw Newer(names: unknown) }
            var done: [String] = []
            let wanted = last.flatMap { last in all.firstIndex { $0.name == last }.map { Array(all[...$0]) } } ?? all
            for migration in wanted where !applied.contains(migration.name) {
                for statement in migration.statements {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query("INSERT INTO schema_migrations (name) VALUES (\(migration.name))", logger: logger)
                done.append(migration.name)
            }
            return done
        }
    }
}

extension PostgresClient {
    /// `withTransaction`, whose refusals (a host that is not there, a key reused) come out as
    /// themselves instead of wrapped, so that controllers answer them as 4xx.
    func transaction<Result>(logger: Logger, isolation: isolated (any Actor)? = #isolation,
                             _ closure: (PostgresConnection) async throws -> sending Result) async throws -> sending Result {
        do {
            return try await withTransaction(logger: logger, isolation: isolation, closure)
        } catch let error as PostgresTransactionError {
            if let refusal = error.closureError, error.rollbackError == nil, !(refusal is PSQLError) { throw refusal }
            throw error
        }
    }
}
