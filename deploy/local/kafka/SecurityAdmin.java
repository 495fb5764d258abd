/*
 * SecurityAdmin: SCRAM credentials and ACLs on the local broker, through
 * Kafka's own Admin client (the broker's jars are on the class path). The
 * Python client of Debian 12 (confluent-kafka 1.7) has neither call.
 *
 * Run as a Java 17 single-file program:
 *   java -cp 'JARS/*' SecurityAdmin.java BOOTSTRAP scram USER PASSWORD_FILE
 *       create or replace USER's SCRAM-SHA-512 credential (deploy/local/up)
 *   java -cp 'JARS/*' SecurityAdmin.java BOOTSTRAP serve
 *       one command a line on stdin, one answer line ("ok ..." or
 *       "error ...") on stdout (tests/e2e/test_security.py):
 *         add PRINCIPAL RESOURCE_TYPE NAME PATTERN_TYPE OPERATION
 *         remove PRINCIPAL RESOURCE_TYPE NAME PATTERN_TYPE OPERATION
 *         list PRINCIPAL       -> ok RESOURCE_TYPE:NAME:PATTERN_TYPE:OPERATION ...
 *         clear PRINCIPAL      every ACL of the principal
 * BOOTSTRAP is a PLAINTEXT listener, whose principal is the super user.
 */
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AccessControlEntryFilter;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourcePatternFilter;
import org.apache.kafka.common.resource.ResourceType;

public class SecurityAdmin {
    private static final long TIMEOUT_S = 30;

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: SecurityAdmin BOOTSTRAP scram USER PASSWORD_FILE | serve");
            System.exit(2);
        }
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.CLIENT_ID_CONFIG, "outbox-relay-security-admin");
        try (Admin admin = Admin.create(props)) {
            switch (args[1]) {
                case "scram" -> scram(admin, args[2], Path.of(args[3]));
                case "serve" -> serve(admin);
                default -> {
                    System.err.println("SecurityAdmin: unknown command " + args[1]);
                    System.exit(2);
                }
            }
        }
    }

    private static void scram(Admin admin, String user, Path passwordFile) throws Exception {
        String password = Files.readString(passwordFile, StandardCharsets.UTF_8).strip();
        ScramCredentialInfo info = new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192);
        admin.alterUserScramCredentials(List.of(new UserScramCredentialUpsertion(user, info, password)))
                .all().get(TIMEOUT_S, TimeUnit.SECONDS);
        System.out.println("SCRAM-SHA-512 credential of user " + user + " set");
    }

    private static AclBinding binding(String[] w) {
        return new AclBinding(
                new ResourcePattern(ResourceType.fromString(w[2]), w[3], PatternType.fromString(w[4])),
                new AccessControlEntry(w[1], "*", AclOperation.fromString(w[5]), AclPermissionType.ALLOW));
    }

    private static AclBindingFilter principalFilter(String principal) {
        return new AclBindingFilter(ResourcePatternFilter.ANY,
                new AccessControlEntryFilter(principal, null, AclOperation.ANY, AclPermissionType.ANY));
    }

    private static String answer(Admin admin, String line) throws Exception {
        String[] w = line.trim().split("\\s+");
        switch (w[0]) {
            case "add" -> {
                admin.createAcls(List.of(binding(w))).all().get(TIMEOUT_S, TimeUnit.SECONDS);
                return "ok";
            }
            case "remove" -> {
                Collection<AclBinding> gone = admin.deleteAcls(List.of(binding(w).toFilter())).all()
                        .get(TIMEOUT_S, TimeUnit.SECONDS);
                return "ok " + gone.size();
            }
            case "clear" -> {
                Collection<AclBinding> gone = admin.deleteAcls(List.of(principalFilter(w[1]))).all()
                        .get(TIMEOUT_S, TimeUnit.SECONDS);
                return "ok " + gone.size();
            }
            case "scram-users" -> {
                List<String> out = new ArrayList<>();
                for (var d : admin.describeUserScramCredentials().all().get(TIMEOUT_S, TimeUnit.SECONDS).values())
                    out.add(d.name() + ":" + d.credentialInfos());
                return ("ok " + String.join(" ", out)).trim();
            }
            case "list" -> {
                List<String> out = new ArrayList<>();
                for (AclBinding b : admin.describeAcls(principalFilter(w[1])).values()
                        .get(TIMEOUT_S, TimeUnit.SECONDS)) {
                    out.add(b.pattern().resourceType() + ":" + b.pattern().name() + ":"
                            + b.pattern().patternType() + ":" + b.entry().operation());
                }
                out.sort(null);
                return ("ok " + String.join(" ", out)).trim();
            }
            default -> {
                return "error unknown command " + w[0];
            }
        }
    }

    private static void serve(Admin admin) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        System.out.println("ready");
        System.out.flush();
        for (String line; (line = in.readLine()) != null; ) {
            if (line.isBlank())
                continue;
            String reply;
            try {
                reply = answer(admin, line);
            } catch (Exception e) {
                Throwable c = e.getCause() != null ? e.getCause() : e;
                reply = "error " + c.getClass().getSimpleName() + ": " + c.getMessage();
            }
            System.out.println(reply.replace('\n', ' '));
            System.out.flush();
        }
    }
}
