// Package deploy holds the checks of what deploy/ ships: the Helm chart
// rendered with several value sets and every object decoded strictly
// against the Kubernetes, KEDA and Prometheus Operator types, the compose
// file loaded by compose-go, the Dockerfiles parsed by BuildKit's parser,
// and the systemd units verified by systemd-analyze. It is a module of its
// own so that Helm, the Kubernetes API types and compose-go stay out of
// the product's dependencies; none of it needs a cluster or a Docker
// daemon.
package deploy
