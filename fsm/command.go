package fsm

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	pb "github.com/skiff-sh/skiff/proto"
)

// commandVersion is the first byte of every log entry. A master that meets a
// version it does not know rejects the entry rather than guessing, so a
// format change needs a new version and an upgrade path, never a silent
// reinterpretation.
const commandVersion byte = 1

// EncodeCommand serialises a command for raft.Apply.
func EncodeCommand(cmd *pb.Command) ([]byte, error) {
	if cmd == nil {
		return nil, errors.New("fsm: encode command: nil command")
	}
	// Deterministic (pb.Marshal writes map entries in key order) so that
	// equal commands are equal log entries.
	b, err := pb.MarshalAppend([]byte{commandVersion}, cmd)
	if err != nil {
		return nil, fmt.Errorf("fsm: encode command: %w", err)
	}
	return b, nil
}

// DecodeCommand parses a command from a Raft log entry. Errors wrap
// ErrInvalid.
func DecodeCommand(b []byte) (*pb.Command, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: decode command: empty entry", ErrInvalid)
	}
	if b[0] != commandVersion {
		return nil, fmt.Errorf("%w: decode command: unknown format version %d", ErrInvalid, b[0])
	}
	// pb.Unmarshal decodes with the generated vtprotobuf code (every master
	// decodes every entry, so it is on the write path's critical CPU) and
	// accepts and produces exactly what gproto.Unmarshal does: masters that
	// decoded an entry differently would diverge.
	cmd := &pb.Command{}
	if err := pb.Unmarshal(b[1:], cmd); err != nil {
		return nil, fmt.Errorf("%w: decode command: %v", ErrInvalid, err)
	}
	return cmd, nil
}

// Field numbers of the batch in Command and of the commands in CommandBatch
// (proto/raft.proto).
const (
	commandBatchField    protowire.Number = 16
	commandBatchCommands protowire.Number = 1
)

// JoinCommands makes one log entry of several encoded commands: a Batch
// command holding them in order, each applied as if it were its own entry
// except that all of them get the entry's index. It appends their encodings
// as they are, which is exactly how the Batch would encode; none of them may
// be a Batch itself (the store refuses nested batches).
func JoinCommands(entries [][]byte) ([]byte, error) {
	inner := 0
	for i, e := range entries {
		if len(e) == 0 || e[0] != commandVersion {
			return nil, fmt.Errorf("fsm: join commands: entry %d is not an encoded command", i)
		}
		inner += protowire.SizeTag(commandBatchCommands) + protowire.SizeBytes(len(e)-1)
	}
	out := make([]byte, 0, 1+protowire.SizeTag(commandBatchField)+protowire.SizeBytes(inner))
	out = append(out, commandVersion)
	out = protowire.AppendTag(out, commandBatchField, protowire.BytesType)
	out = protowire.AppendVarint(out, uint64(inner))
	for _, e := range entries {
		out = protowire.AppendTag(out, commandBatchCommands, protowire.BytesType)
		out = protowire.AppendBytes(out, e[1:])
	}
	return out, nil
}
