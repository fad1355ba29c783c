package proto

import "google.golang.org/grpc"

// HTTP/2 flow-control windows of every skiff gRPC connection: masters'
// API, master-to-master forwarding, workers' node API and client.Client.
//
// Setting them fixes the windows and so turns off gRPC's BDP estimator,
// which otherwise sends a PING, and reads its ack, for almost every message
// a connection receives while no PING is outstanding: on connections that
// carry one small request (or response) at a time, that is an extra frame
// each way per call. Without them the masters spent about 8 % more CPU per
// write at 64 clients (docs/performance-history.md, ninth session). CockroachDB
// fixes its windows for the same reason. 2 MiB per stream and 8 MiB per
// connection let one stream move 10 GB/s at a 0.2 ms round trip and 40
// MB/s at 50 ms, and bound what a peer can send unread.
const (
	grpcStreamWindow = 2 << 20
	grpcConnWindow   = 8 << 20
)

// GRPCServerWindows are the windows as server options.
func GRPCServerWindows() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.InitialWindowSize(grpcStreamWindow), grpc.InitialConnWindowSize(grpcConnWindow)}
}

// GRPCDialWindows are the windows as dial options.
func GRPCDialWindows() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithInitialWindowSize(grpcStreamWindow), grpc.WithInitialConnWindowSize(grpcConnWindow)}
}
