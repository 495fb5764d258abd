# package.cmake: the Debian package outbox-relay, built by CPack
# (scripts/package-deb; deploy/README.md, "Debian package"). Included by the
# top-level CMakeLists.txt when OUTBOX_PACKAGE is ON, so that a plain
# `cmake --install` (the container build) installs the binary alone and never
# writes to /etc.
#
# What the package holds, under CPACK_PACKAGING_INSTALL_PREFIX (/usr):
#   bin/outbox-relay                          the relay, stripped
#   /lib/systemd/system/outbox-relay.service  deploy/systemd/ with ExecStart at bin/
#   /etc/outbox-relay/relay.conf              conf/production.conf, a conffile
#   share/outbox-relay/sql/                   install.sql, lib/, migrations/
#   share/outbox-relay/grafana/               the dashboard
#   share/outbox-relay/prometheus/            the alert rules
#   share/doc/outbox-relay/                   relay.conf.example (every option)
# No system user: the unit runs with DynamicUser=yes.

if(OUTBOX_CRASH_POINTS)
  message(FATAL_ERROR "OUTBOX_PACKAGE needs -DOUTBOX_CRASH_POINTS=OFF: "
                      "the test-only crash points have no place in a package")
endif()

set(OUTBOX_PACKAGE_MAINTAINER "outbox-relay maintainers <outbox-relay@localhost>"
    CACHE STRING "Maintainer field of the Debian package")
set(pkgdir ${CMAKE_CURRENT_LIST_DIR})
set(share share/outbox-relay)

# The unit as the package installs it: the binary is /usr/bin/outbox-relay,
# not the /usr/local/bin/ of a hand install, and the header says so.
file(READ ${CMAKE_SOURCE_DIR}/deploy/systemd/outbox-relay.service unit)
string(FIND "${unit}" "[Unit]" body_at)
string(FIND "${unit}" "ExecStart=/usr/local/bin/outbox-relay " exec_at)
if(body_at LESS 0 OR exec_at LESS 0)
  message(FATAL_ERROR "deploy/systemd/outbox-relay.service: no [Unit] section or no "
                      "ExecStart=/usr/local/bin/outbox-relay to rewrite for the package")
endif()
string(SUBSTRING "${unit}" ${body_at} -1 unit)
string(REPLACE "ExecStart=/usr/local/bin/outbox-relay " "ExecStart=/usr/bin/outbox-relay " unit
               "${unit}")
file(WRITE ${CMAKE_BINARY_DIR}/package/outbox-relay.service
     "# outbox-relay.service, installed by the Debian package outbox-relay.\n"
     "# Edit /etc/outbox-relay/relay.conf, put the secrets in\n"
     "# /etc/outbox-relay/relay.env (mode 0600, see below), then:\n"
     "#   systemctl enable --now outbox-relay\n"
     "# Local changes: systemctl edit outbox-relay (this file is replaced on upgrade).\n\n"
     "${unit}")
file(WRITE ${CMAKE_BINARY_DIR}/package/conffiles "/etc/outbox-relay/relay.conf\n")

# Debian 12 keeps packaged units in /lib/systemd/system (moved to /usr/lib in
# later releases).
install(FILES ${CMAKE_BINARY_DIR}/package/outbox-relay.service DESTINATION /lib/systemd/system)
install(FILES ${CMAKE_SOURCE_DIR}/conf/production.conf DESTINATION /etc/outbox-relay
        RENAME relay.conf)
install(FILES ${CMAKE_SOURCE_DIR}/sql/install.sql DESTINATION ${share}/sql)
install(DIRECTORY ${CMAKE_SOURCE_DIR}/sql/lib ${CMAKE_SOURCE_DIR}/sql/migrations
        DESTINATION ${share}/sql FILES_MATCHING PATTERN "*.sql")
install(FILES ${CMAKE_SOURCE_DIR}/deploy/grafana/outbox-relay.json DESTINATION ${share}/grafana)
install(FILES ${CMAKE_SOURCE_DIR}/deploy/prometheus/alerts.yml DESTINATION ${share}/prometheus)
install(FILES ${CMAKE_SOURCE_DIR}/conf/relay.conf DESTINATION share/doc/outbox-relay
        RENAME relay.conf.example)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME outbox-relay)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "${OUTBOX_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "PostgreSQL outbox to Kafka relay, exactly once")
# The summary above is the first line; CPack indents the rest.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
    "outbox-relay moves rows of a PostgreSQL outbox table to Kafka topics inside
Kafka transactions, with its position kept both in PostgreSQL and in a Kafka
checkpoint topic, so that every row reaches Kafka exactly once. Several
instances share a lease: one publishes, the others stand by.

The package holds the daemon, a hardened systemd unit (not enabled), an
example /etc/outbox-relay/relay.conf, and under /usr/share/outbox-relay the
SQL installer and migrations, a Grafana dashboard and Prometheus alert rules.")
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Depends from the binary's shared libraries (dpkg-shlibdeps, of dpkg-dev).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# TLS to PostgreSQL (sslmode=verify-full) and Kafka (SASL_SSL) checks the
# servers against the system's CA certificates unless told otherwise.
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "ca-certificates")
# psql runs the SQL installer; Prometheus loads the alert rules.
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "postgresql-client, prometheus")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    "${CMAKE_BINARY_DIR}/package/conffiles;${pkgdir}/postinst;${pkgdir}/prerm;${pkgdir}/postrm")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_STRIP_FILES ON)
# cpack installs the project into its staging tree; only the relay need be
# built for that, not the unit tests (scripts/package-deb builds the relay).
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY ON)
include(CPack)
