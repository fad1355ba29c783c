package server

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

// newKey returns a line NAME:BASE64 of a fresh random key.
func newKey(t *testing.T, name string) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return name + ":" + base64.StdEncoding.EncodeToString(b)
}

func writeKeyFile(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseEncryptionKeys(t *testing.T) {
	k1, k2 := newKey(t, "k1"), newKey(t, "k2")
	short := "k3:" + base64.StdEncoding.EncodeToString(make([]byte, 16))
	for _, tc := range []struct {
		name  string
		file  string
		names []string
		err   string
	}{
		{"two keys, comments", "# rotated 2025-01\n\n" + k2 + "\n" + k1 + "\n", []string{"k2", "k1"}, ""},
		{"empty", "# nothing\n", nil, "no keys"},
		{"no colon", "abc\n", nil, "line 1: want NAME:BASE64-KEY"},
		{"bad name", "k/1" + k1[2:] + "\n", nil, `line 1: key name "k/1"`},
		{"bad base64", "k1:!!!\n", nil, `line 1: key "k1" is not base64`},
		{"short key", short + "\n", nil, `line 1: key "k3" is 16 bytes, want 32 (AES-256)`},
		{"duplicate", k1 + "\n" + k1 + "\n", nil, `line 2: key name "k1" appears twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := parseEncryptionKeys([]byte(tc.file))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want an error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, k := range keys {
				names = append(names, k.name)
			}
			if strings.Join(names, ",") != strings.Join(tc.names, ",") {
				t.Fatalf("keys %v, want %v", names, tc.names)
			}
		})
	}

	cfg := DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.BootstrapExpect = "m1", t.TempDir(), 1
	cfg.Insecure = true
	cfg.EncryptionKeyFile = writeKeyFile(t, short)
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "EncryptionKeyFile") {
		t.Fatalf("Validate with a short key: %v", err)
	}
}

func secretObj(name string, data map[string]string, stringData map[string]string) *pb.Object {
	s := &pb.Secret{Metadata: &pb.ObjectMeta{Name: name, Namespace: "default"}, StringData: stringData}
	if data != nil {
		s.Data = map[string][]byte{}
		for k, v := range data {
			s.Data[k] = []byte(v)
		}
	}
	return pb.Wrap(s)
}

func TestSecretBox(t *testing.T) {
	k1, k2 := newKey(t, "k1"), newKey(t, "k2")
	box := func(lines ...string) *secretBox {
		keys, err := parseEncryptionKeys([]byte(strings.Join(lines, "\n")))
		if err != nil {
			t.Fatal(err)
		}
		return &secretBox{keys: keys}
	}
	b1 := box(k1)
	o := secretObj("db", map[string]string{"user": "admin"}, map[string]string{"password": "hunter2"})
	if err := b1.seal(o, nil); err != nil {
		t.Fatal(err)
	}
	sec := o.GetSecret()
	if len(sec.GetData()) != 1 || len(sec.GetStringData()) != 0 {
		t.Fatalf("sealed form: %v", sec)
	}
	stored := sec.GetData()[encryptedDataKey]
	if !bytes.HasPrefix(stored, []byte("skiff:enc:aesgcm:v1:k1:")) || bytes.Contains(stored, []byte("hunter2")) || bytes.Contains(stored, []byte("user")) {
		t.Fatalf("stored value %q", stored)
	}

	plain, err := b1.open(o)
	if err != nil {
		t.Fatal(err)
	}
	if got := plain.GetSecret().GetData(); string(got["user"]) != "admin" || string(got["password"]) != "hunter2" || len(got) != 2 {
		t.Fatalf("opened data %v", got)
	}
	if _, ok := o.GetSecret().GetData()[encryptedDataKey]; !ok {
		t.Fatal("open modified its argument")
	}

	t.Run("unchanged data keeps the ciphertext", func(t *testing.T) {
		again := secretObj("db", map[string]string{"user": "admin", "password": "hunter2"}, nil)
		if err := b1.seal(again, o); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again.GetSecret().GetData()[encryptedDataKey], stored) {
			t.Fatal("same data was encrypted again")
		}
		changed := secretObj("db", map[string]string{"user": "root"}, nil)
		if err := b1.seal(changed, o); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(changed.GetSecret().GetData()[encryptedDataKey], stored) {
			t.Fatal("changed data kept the old ciphertext")
		}
	})

	t.Run("rotation: old key decrypts, new key encrypts", func(t *testing.T) {
		b21 := box(k2, k1)
		if _, err := b21.open(o); err != nil {
			t.Fatalf("old secret with the old key second: %v", err)
		}
		again := secretObj("db", map[string]string{"user": "admin", "password": "hunter2"}, nil)
		if err := b21.seal(again, o); err != nil {
			t.Fatal(err)
		}
		if v := again.GetSecret().GetData()[encryptedDataKey]; !bytes.HasPrefix(v, []byte("skiff:enc:aesgcm:v1:k2:")) {
			t.Fatalf("rewrite after rotation: %q, want key k2", v)
		}
	})

	t.Run("missing or wrong key", func(t *testing.T) {
		_, err := (&secretBox{}).open(o)
		wantStatus(t, err, codes.FailedPrecondition,
			"secret default/db is encrypted with key k1, which this master does not have: start it with the same --encryption-key-file")
		_, err = box(newKey(t, "k1")).open(o)
		wantStatus(t, err, codes.FailedPrecondition, "decryption with key k1 failed")
	})

	t.Run("ciphertext is bound to its secret", func(t *testing.T) {
		moved := o.Clone()
		moved.Meta().Name = "other"
		_, err := b1.open(moved)
		wantStatus(t, err, codes.FailedPrecondition, "secret default/other: decryption with key k1 failed")
	})

	t.Run("no keys, no data: unchanged", func(t *testing.T) {
		p := secretObj("p", map[string]string{"a": "b"}, nil)
		if err := (&secretBox{}).seal(p, nil); err != nil || string(p.GetSecret().GetData()["a"]) != "b" {
			t.Fatalf("without keys: %v %v", p, err)
		}
		e := secretObj("e", nil, nil)
		if err := b1.seal(e, nil); err != nil || len(e.GetSecret().GetData()) != 0 {
			t.Fatalf("empty secret: %v %v", e, err)
		}
	})
}

// readFiles concatenates every regular file under dir.
func readFiles(t *testing.T, dir string) []byte {
	t.Helper()
	var all []byte
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		all = append(all, b...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return all
}

// A Secret's values never reach the Raft log or the snapshots of any
// master, while every read path of every master returns them in plaintext.
func TestSecretsEncryptedAtRest(t *testing.T) {
	t.Parallel()
	keyFile := writeKeyFile(t, newKey(t, "k1"))
	cfgs := testConfigs(t, 3, 3)
	for i := range cfgs {
		cfgs[i].EncryptionKeyFile = keyFile
	}
	servers := startCluster(t, cfgs)
	leader := waitLeader(t, servers)
	fol := followers(servers, leader)
	const (
		dataValue   = "s3cr3t-DATA-PLAINTEXT-4711"
		stringValue = "s3cr3t-STRINGDATA-PLAINTEXT-0815"
		updateValue = "s3cr3t-UPDATED-PLAINTEXT-1234"
		control     = "configmap-PLAINTEXT-control-99"
	)
	ctx := ctxT(t, 60*time.Second)

	list, err := pb.CollectList(fol[0].cluster().List(ctx, &pb.ListRequest{Kind: "Secret", Namespace: "default"}))
	if err != nil {
		t.Fatal(err)
	}
	watch, err := fol[1].cluster().Watch(ctx, &pb.WatchRequest{Kind: "Secret", Namespace: "default", ResourceVersion: list.GetResourceVersion()})
	if err != nil {
		t.Fatal(err)
	}

	// Through a follower: the leader encrypts what the follower forwards.
	created, err := fol[0].cluster().Create(ctx, &pb.WriteRequest{Object: secretObj("db",
		map[string]string{"password": dataValue}, map[string]string{"token": stringValue})})
	if err != nil {
		t.Fatal(err)
	}
	wantPlain := func(what string, o *pb.Object, want map[string]string) {
		t.Helper()
		got := o.GetSecret().GetData()
		if len(got) != len(want) {
			t.Fatalf("%s: data %q, want %q", what, got, want)
		}
		for k, v := range want {
			if string(got[k]) != v {
				t.Fatalf("%s: data %q, want %q", what, got, want)
			}
		}
	}
	first := map[string]string{"password": dataValue, "token": stringValue}
	wantPlain("create response", created.GetObject(), first)
	if _, err := leader.cluster().Create(ctx, &pb.WriteRequest{Object: configMap("control", map[string]string{"v": control})}); err != nil {
		t.Fatal(err)
	}

	for _, ts := range servers {
		got, err := ts.cluster().Get(ctx, &pb.GetRequest{Kind: "Secret", Namespace: "default", Name: "db"})
		if err != nil {
			t.Fatalf("get through %s: %v", ts.cfg.Name, err)
		}
		wantPlain("get through "+ts.cfg.Name, got.GetObject(), first)
		l, err := pb.CollectList(ts.cluster().List(ctx, &pb.ListRequest{Kind: "Secret", Namespace: "default"}))
		if err != nil || len(l.GetItems()) != 1 {
			t.Fatalf("list through %s: %v %v", ts.cfg.Name, l, err)
		}
		wantPlain("list through "+ts.cfg.Name, l.GetItems()[0], first)
		// The store itself holds ciphertext.
		raw, err := ts.srv.fsm.Get("Secret", "default", "db")
		if err != nil {
			t.Fatal(err)
		}
		if name, _, ok := sealedData(raw.GetSecret().GetData()); !ok || name != "k1" {
			t.Fatalf("%s stores %v, want the encrypted form under k1", ts.cfg.Name, raw.GetSecret())
		}
	}

	// Re-applying the same data changes nothing; new data is a new
	// ciphertext.
	applied, err := fol[1].cluster().Apply(ctx, &pb.WriteRequest{Object: secretObj("db", first, nil)})
	if err != nil || applied.GetAction() != "unchanged" {
		t.Fatalf("apply of the same data: %v %v", applied, err)
	}
	cur := applied.GetObject()
	cur.GetSecret().Data = map[string][]byte{"password": []byte(updateValue)}
	updated, err := leader.cluster().Update(ctx, &pb.WriteRequest{Object: cur})
	if err != nil {
		t.Fatal(err)
	}
	wantPlain("update response", updated.GetObject(), map[string]string{"password": updateValue})

	for _, want := range []struct {
		typ  string
		data map[string]string
	}{{"ADDED", first}, {"MODIFIED", map[string]string{"password": updateValue}}} {
		ev, err := watch.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ev.GetType() != want.typ {
			t.Fatalf("watch event %s, want %s", ev.GetType(), want.typ)
		}
		wantPlain("watch "+want.typ, ev.GetObject(), want.data)
	}

	deleted, err := fol[0].cluster().Delete(ctx, &pb.DeleteRequest{Delete: &pb.DeleteOp{Kind: "Secret", Namespace: "default", Name: "db"}})
	if err != nil {
		t.Fatal(err)
	}
	wantPlain("delete response", deleted.GetObject(), map[string]string{"password": updateValue})
	// A Secret that stays, for the snapshots.
	if _, err := leader.cluster().Create(ctx, &pb.WriteRequest{Object: secretObj("kept", map[string]string{"k": dataValue}, nil)}); err != nil {
		t.Fatal(err)
	}

	// Every master has applied everything; snapshot each one.
	last := leader.srv.raft.LastIndex()
	for _, ts := range servers {
		if err := ts.srv.fsm.WaitForIndex(ctx, last); err != nil {
			t.Fatal(err)
		}
		if err := ts.srv.raft.Snapshot().Error(); err != nil {
			t.Fatalf("snapshot %s: %v", ts.cfg.Name, err)
		}
	}
	for _, ts := range servers {
		dir := filepath.Join(ts.cfg.DataDir, "raft")
		logBytes := readFiles(t, filepath.Join(dir, "raft.db"))
		snapBytes := readFiles(t, filepath.Join(dir, "snapshots"))
		for name, b := range map[string][]byte{"raft log": logBytes, "snapshots": snapBytes} {
			// The control proves the search would find plaintext.
			if !bytes.Contains(b, []byte(control)) {
				t.Fatalf("%s %s: the ConfigMap control value is missing: the check is broken", ts.cfg.Name, name)
			}
			for _, v := range []string{dataValue, stringValue, updateValue} {
				if bytes.Contains(b, []byte(v)) {
					t.Errorf("%s %s contains the Secret value %q in plaintext", ts.cfg.Name, name, v)
				}
			}
		}
	}

	// The snapshot a client saves holds ciphertext too.
	stream, err := fol[0].operator().SnapshotSave(ctx, &pb.SnapshotSaveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var saved bytes.Buffer
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		saved.Write(chunk.GetData())
	}
	if !bytes.Contains(saved.Bytes(), []byte(control)) || bytes.Contains(saved.Bytes(), []byte(dataValue)) {
		t.Fatalf("saved snapshot: control present %v, secret present %v",
			bytes.Contains(saved.Bytes(), []byte(control)), bytes.Contains(saved.Bytes(), []byte(dataValue)))
	}
}

// Key rotation on a restarted master: a new first key encrypts new and
// rewritten Secrets while the old key still decrypts old ones; without the
// key a master refuses to serve them and says what to do.
func TestSecretKeyRotation(t *testing.T) {
	t.Parallel()
	k1, k2 := newKey(t, "k1"), newKey(t, "k2")
	cfg := singleConfig(t)
	cfg.EncryptionKeyFile = writeKeyFile(t, k1)
	ts := startServer(t, cfg)
	waitLeader(t, []*testServer{ts})
	ctx := ctxT(t, 60*time.Second)

	restart := func(keyFile string) {
		t.Helper()
		ts.stop()
		cfg.EncryptionKeyFile = keyFile
		ts = startServer(t, cfg)
		waitLeader(t, []*testServer{ts})
	}
	storedKey := func(name string) string {
		t.Helper()
		raw, err := ts.srv.fsm.Get("Secret", "default", name)
		if err != nil {
			t.Fatal(err)
		}
		k, _, ok := sealedData(raw.GetSecret().GetData())
		if !ok {
			return "plaintext"
		}
		return k
	}
	get := func(name, want string) {
		t.Helper()
		got, err := ts.cluster().Get(ctx, &pb.GetRequest{Kind: "Secret", Namespace: "default", Name: name})
		if err != nil {
			t.Fatalf("get %s: %v", name, err)
		}
		if v := string(got.GetObject().GetSecret().GetData()["v"]); v != want {
			t.Fatalf("get %s: v=%q, want %q", name, v, want)
		}
	}
	create := func(name, v string) {
		t.Helper()
		if _, err := ts.cluster().Create(ctx, &pb.WriteRequest{Object: secretObj(name, map[string]string{"v": v}, nil)}); err != nil {
			t.Fatal(err)
		}
	}

	create("old", "one")
	if k := storedKey("old"); k != "k1" {
		t.Fatalf("old is stored under %s, want k1", k)
	}
	// Controllers on the leader read the stored form and may write it back
	// (the garbage collector dropping an owner reference): data survives.
	raw, err := ts.srv.fsm.Get("Secret", "default", "old")
	if err != nil {
		t.Fatal(err)
	}
	next := raw.Clone()
	next.Meta().Labels = map[string]string{"touched": "yes"}
	if _, err := (localCluster{ts.srv}).Update(ctx, next); err != nil {
		t.Fatalf("controller update of a stored Secret: %v", err)
	}
	get("old", "one")

	restart(writeKeyFile(t, k2, k1))
	get("old", "one")
	create("new", "two")
	if k := storedKey("new"); k != "k2" {
		t.Fatalf("new is stored under %s, want k2", k)
	}
	// Rewriting the old Secret moves it to the new key.
	if _, err := ts.cluster().Apply(ctx, &pb.WriteRequest{Object: secretObj("old", map[string]string{"v": "one"}, nil)}); err != nil {
		t.Fatal(err)
	}
	if k := storedKey("old"); k != "k2" {
		t.Fatalf("rewritten old is stored under %s, want k2", k)
	}

	restart(writeKeyFile(t, k2))
	get("old", "one")
	get("new", "two")

	restart("")
	_, err = ts.cluster().Get(ctx, &pb.GetRequest{Kind: "Secret", Namespace: "default", Name: "new"})
	wantStatus(t, err, codes.FailedPrecondition,
		"secret default/new is encrypted with key k2, which this master does not have: start it with the same --encryption-key-file")
	_, err = pb.CollectList(ts.cluster().List(ctx, &pb.ListRequest{Kind: "Secret", Namespace: "default"}))
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("list without the key: %v", err)
	}
	// Without a key file new Secrets are stored as before, in plaintext.
	create("plain", "three")
	if k := storedKey("plain"); k != "plaintext" {
		t.Fatalf("without a key file: stored under %s", k)
	}
	get("plain", "three")
}
