// Package logsetup builds the slog logger of both daemons from one pair of
// flags, --log-format (EXECQ_LOG_FORMAT) and --log-level (EXECQ_LOG_LEVEL),
// so they log alike: text for a person at a terminal, JSON for a machine,
// and no second timestamp under systemd's journal, which stamps every line
// itself.
package logsetup
