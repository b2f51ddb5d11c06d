// SPDX-License-Identifier: GPL-3.0-or-later
// Copyright (C) the mnemoflow authors.
//
// Tiny launcher for an embedded Neo4j Community DBMS that serves Bolt, for local tests.
// It links Neo4j's GPL-3.0 API, so it is licensed GPL-3.0-or-later. The Neo4j jars are
// resolved from Maven Central into ~/.m2 by pom.xml and are never committed.
//
// Usage: java [jvm flags] -cp CLASSPATH Neo4jLauncher HOME_DIR [neo4j-setting=value ...]
//   env NEO4J_PASSWORD (>= 8 chars) enables auth and sets the password of user "neo4j";
//   without it, auth is disabled.
// Prints "NEO4J_READY bolt://HOST:PORT" once the default database answers; SIGTERM shuts down cleanly.

import java.io.IOException;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;

public final class Neo4jLauncher {
    private static final String BOLT_LISTEN = "server.bolt.listen_address";
    private static final String BOLT_ADVERTISED = "server.bolt.advertised_address";
    private static final String DEFAULT_DB = "initial.dbms.default_database";

    public static void main(String[] args) {
        try {
            run(args);
        } catch (Throwable e) {
            System.err.println("NEO4J_FAILED " + e);
            e.printStackTrace();
            System.exit(1); // runs the shutdown hook if the DBMS was built
        }
    }

    private static void run(String[] args) throws Exception {
        if (args.length < 1) {
            throw new IllegalArgumentException("usage: Neo4jLauncher HOME_DIR [setting=value ...]");
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        String password = System.getenv("NEO4J_PASSWORD");
        if (password != null && password.length() < 8) {
            throw new IllegalArgumentException("NEO4J_PASSWORD must have at least 8 characters");
        }

        Map<String, String> cfg = new LinkedHashMap<>();
        cfg.put("server.bolt.enabled", "true");
        cfg.put(BOLT_LISTEN, "127.0.0.1:7687");
        cfg.put("server.memory.pagecache.size", "128m");
        cfg.put("dbms.security.auth_enabled", String.valueOf(password != null));
        cfg.put("db.tx_log.preallocate", "false");
        cfg.put("db.tx_log.rotation.retention_policy", "2 files");
        cfg.put("db.tx_log.rotation.size", "16M");
        cfg.put("dbms.usage_report.enabled", "false"); // default true: would try to phone home
        // Internal 5.26 setting (default 5 s, paid twice): Bolt's Netty event loops wait this quiet
        // period on shutdown, so SIGTERM took ~10 s. The stores are checkpointed before that anyway.
        cfg.put("internal.dbms.bolt.netty_server_shutdown_quiet_period", "0");
        for (int i = 1; i < args.length; i++) {
            int eq = args[i].indexOf('=');
            if (eq <= 0) {
                throw new IllegalArgumentException("expected setting=value, got: " + args[i]);
            }
            cfg.put(args[i].substring(0, eq).trim(), args[i].substring(eq + 1).trim());
        }
        cfg.putIfAbsent(BOLT_ADVERTISED, cfg.get(BOLT_LISTEN));

        // The 5.26 builder has no raw-string setter, so pass the settings as a neo4j.conf file.
        // Strict config validation stays on: an unknown or misspelled key aborts the start.
        Files.createDirectories(home);
        Path conf = home.resolve("launcher-neo4j.conf");
        writeConf(conf, cfg);

        DatabaseManagementService dbms =
                new DatabaseManagementServiceBuilder(home).loadPropertiesFromFile(conf).build();
        Runtime.getRuntime().addShutdownHook(new Thread(dbms::shutdown, "neo4j-shutdown"));

        if (password != null) {
            setPassword(dbms, password);
        }
        String dbName = cfg.getOrDefault(DEFAULT_DB, "neo4j");
        dbms.database(dbName).executeTransactionally("RETURN 1");

        System.out.println("NEO4J_READY bolt://" + cfg.get(BOLT_ADVERTISED));
        System.out.flush();
        Thread.currentThread().join(); // park; the shutdown hook closes the store on SIGTERM/SIGINT
    }

    private static void writeConf(Path conf, Map<String, String> cfg) throws IOException {
        try (Writer w = Files.newBufferedWriter(conf, StandardCharsets.UTF_8)) {
            w.write("# written by Neo4jLauncher at every start; edits are lost\n");
            for (Map.Entry<String, String> e : cfg.entrySet()) {
                w.write(e.getKey() + "=" + e.getValue() + "\n");
            }
        }
    }

    /** First start: neo4j/neo4j with a forced change. Later starts may already have this password. */
    private static void setPassword(DatabaseManagementService dbms, String password) {
        try {
            dbms.database("system").executeTransactionally(
                    "ALTER USER neo4j SET PASSWORD $pw CHANGE NOT REQUIRED", Map.<String, Object>of("pw", password));
        } catch (RuntimeException e) {
            String msg = String.valueOf(e.getMessage());
            if (!msg.contains("same")) { // "Old password and new password cannot be the same."
                throw e;
            }
        }
    }
}
