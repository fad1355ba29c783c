package proto

//go:generate protoc -I . --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative --go-vtproto_out=. --go-vtproto_opt=paths=source_relative,features=marshal+unmarshal+size+clone meta.proto core.proto apps.proto object.proto raft.proto api.proto node.proto
//go:generate go run ./internal/vtsortmaps meta_vtproto.pb.go core_vtproto.pb.go apps_vtproto.pb.go object_vtproto.pb.go raft_vtproto.pb.go api_vtproto.pb.go node_vtproto.pb.go
