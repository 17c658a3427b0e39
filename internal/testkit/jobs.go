package testkit

// JobsProto is a work queue's service for group fetch routes: Take streams
// the caller's share of a topic, Ack acknowledges what it got by message
// id (field 32767 of Job), Get is a unary method of the same service.
const JobsProto = `syntax = "proto3";
package jobs;
import "google/protobuf/empty.proto";
service Jobs {
  rpc Take(google.protobuf.Empty) returns (stream Job);
  rpc Ack(AckRequest) returns (google.protobuf.Empty);
  rpc Get(Job) returns (Job);
}
message Job {
  string name = 1;
  bytes message_id = 32767;
}
message AckRequest {
  repeated bytes message_ids = 1;
}
`
