// Package faults holds Ferry's fault suite, in its tests only: the proxy
// path (a gRPC client, a Ferry front route, real Apache Kafka, a Ferry back
// end and a gRPC echo server, each in its own process) driven with calls
// while back ends, the broker and the server are killed, stopped and
// restarted. Each scenario reports how many calls were sent, answered,
// failed visibly, lost and executed twice, and fails when any was lost.
//
// The suite runs only when FERRY_FAULT_KAFKA=1 and scripts/kafka.sh may
// stop and kill the broker it names; docs/FAULTS.md says how to run it and
// how each count is defined.
package faults
