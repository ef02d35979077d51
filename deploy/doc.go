// Package deploy holds what an operator installs next to the binaries to
// watch them: the Grafana dashboard (grafana/execq-dashboard.json) and the
// Prometheus alerting rules with their promtool unit tests (prometheus/).
//
// It has no code of its own. Its tests keep those files honest: promtool
// accepts the rules and proves every alert, every dashboard query parses, and
// every metric and label they name is one the coordinator or the agent
// actually exports, so a renamed metric breaks the build rather than an
// operator's dashboard.
package deploy
