package server

// Secrets encrypted at rest, like Kubernetes' EncryptionConfiguration with
// the aesgcm provider. With Config.EncryptionKeyFile set, the leader
// encrypts every Secret's data before proposing it, so the Raft log, every
// master's store and the snapshots hold only ciphertext; each master
// decrypts on the way out (Get, List, Watch, write responses).
//
// The stored form replaces the whole of data (after stringData is merged
// into it) with one entry:
//
//	data: {"skiff-encrypted": "skiff:enc:aesgcm:v1:<key name>:<12-byte nonce><ciphertext+tag>"}
//
// The plaintext is the deterministic protobuf encoding of a Secret holding
// only data, so key names are hidden too. One entry in data rather than an
// annotation: Apply merges annotations, so an annotation could outlive the
// encryption it describes, and the marker must travel with the bytes it
// describes. The Secret's namespace and name are the AEAD's additional data,
// so ciphertext copied into another Secret does not decrypt. type,
// immutable and metadata stay readable (the store indexes metadata).
// Validation runs on the plaintext before encryption, and the store does
// not validate, so required keys of typed Secrets are still checked.
//
// Rotation: put a new key first in the file on every master (restart them),
// rewrite every Secret (`skiff get secrets -A -o yaml | skiff apply -f -`),
// then drop the old key. A write whose data is unchanged keeps the stored
// ciphertext when it is already under the first key, so re-applying is
// "unchanged" and rewriting under a new key re-encrypts.

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"

	pb "github.com/skiff-sh/skiff/proto"
)

const (
	// encryptedDataKey is the only data key of a Secret stored encrypted.
	encryptedDataKey = "skiff-encrypted"
	// encryptedPrefix starts its value; the key name and a colon follow.
	encryptedPrefix    = "skiff:enc:aesgcm:v1:"
	encryptionKeyBytes = 32 // AES-256
	nonceBytes         = 12 // GCM's standard nonce
)

var keyNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// encryptionKey is one named AES-256-GCM key.
type encryptionKey struct {
	name string
	aead cipher.AEAD
}

// secretBox encrypts and decrypts Secret data. The zero value (no keys)
// leaves new Secrets in plaintext but still recognises encrypted ones, so a
// master started without the key file fails reads of them clearly.
type secretBox struct {
	keys []encryptionKey // keys[0] encrypts; all decrypt
}

// loadSecretBox reads a key file (see parseEncryptionKeys); "" gives a box
// without keys.
func loadSecretBox(path string) (*secretBox, error) {
	if path == "" {
		return &secretBox{}, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read encryption key file: %w", err)
	}
	keys, err := parseEncryptionKeys(data)
	if err != nil {
		return nil, fmt.Errorf("encryption key file %s: %w", path, err)
	}
	return &secretBox{keys: keys}, nil
}

// parseEncryptionKeys parses lines of NAME:BASE64 (32 bytes once decoded);
// blank lines and lines starting with # are skipped. The first key
// encrypts.
func parseEncryptionKeys(data []byte) ([]encryptionKey, error) {
	var keys []encryptionKey
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, b64, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("line %d: want NAME:BASE64-KEY", n)
		}
		if !keyNameRE.MatchString(name) {
			return nil, fmt.Errorf("line %d: key name %q: use 1-64 letters, digits, '.', '_' or '-'", n, name)
		}
		if seen[name] {
			return nil, fmt.Errorf("line %d: key name %q appears twice", n, name)
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
		if err != nil {
			return nil, fmt.Errorf("line %d: key %q is not base64: %v", n, name, err)
		}
		if len(raw) != encryptionKeyBytes {
			return nil, fmt.Errorf("line %d: key %q is %d bytes, want %d (AES-256): generate one with `head -c 32 /dev/urandom | base64`",
				n, name, len(raw), encryptionKeyBytes)
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, fmt.Errorf("line %d: key %q: %v", n, name, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("line %d: key %q: %v", n, name, err)
		}
		seen[name] = true
		keys = append(keys, encryptionKey{name: name, aead: aead})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("no keys: add a line NAME:BASE64-32-BYTES")
	}
	return keys, nil
}

func (b *secretBox) enabled() bool { return len(b.keys) > 0 }

func (b *secretBox) key(name string) *encryptionKey {
	for i := range b.keys {
		if b.keys[i].name == name {
			return &b.keys[i]
		}
	}
	return nil
}

// sealedData returns the key name and nonce+ciphertext of data in the
// encrypted form; ok is false for plaintext data.
func sealedData(data map[string][]byte) (keyName string, payload []byte, ok bool) {
	v, found := data[encryptedDataKey]
	if !found || len(data) != 1 || !bytes.HasPrefix(v, []byte(encryptedPrefix)) {
		return "", nil, false
	}
	rest := v[len(encryptedPrefix):]
	i := bytes.IndexByte(rest, ':')
	if i < 0 {
		return "", nil, false
	}
	return string(rest[:i]), rest[i+1:], true
}

func secretAAD(namespace, name string) []byte {
	return []byte("skiff/Secret/" + namespace + "/" + name)
}

func secretRef(m *pb.ObjectMeta) string { return m.GetNamespace() + "/" + m.GetName() }

// decrypt returns the plaintext data of a Secret in the encrypted form.
// Errors are gRPC statuses that say how to fix the master.
func (b *secretBox) decrypt(m *pb.ObjectMeta, keyName string, payload []byte) (map[string][]byte, error) {
	k := b.key(keyName)
	if k == nil {
		return nil, status.Errorf(codes.FailedPrecondition,
			"secret %s is encrypted with key %s, which this master does not have: start it with the same --encryption-key-file as the other masters",
			secretRef(m), keyName)
	}
	if len(payload) < nonceBytes {
		return nil, status.Errorf(codes.DataLoss, "secret %s: stored ciphertext is truncated (%d bytes)", secretRef(m), len(payload))
	}
	plain, err := k.aead.Open(nil, payload[:nonceBytes], payload[nonceBytes:], secretAAD(m.GetNamespace(), m.GetName()))
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition,
			"secret %s: decryption with key %s failed (%v): the key %s in this master's --encryption-key-file differs from the one it was encrypted with",
			secretRef(m), keyName, err, keyName)
	}
	var holder pb.Secret
	if err := gproto.Unmarshal(plain, &holder); err != nil {
		return nil, status.Errorf(codes.DataLoss, "secret %s: decrypted data does not decode: %v", secretRef(m), err)
	}
	return holder.GetData(), nil
}

// encrypt returns the stored value for data under the first key.
func (b *secretBox) encrypt(m *pb.ObjectMeta, data map[string][]byte) ([]byte, error) {
	k := b.keys[0]
	plain, err := gproto.MarshalOptions{Deterministic: true}.Marshal(&pb.Secret{Data: data})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "secret %s: encode data: %v", secretRef(m), err)
	}
	out := make([]byte, 0, len(encryptedPrefix)+len(k.name)+1+nonceBytes+len(plain)+k.aead.Overhead())
	out = append(out, encryptedPrefix...)
	out = append(out, k.name...)
	out = append(out, ':')
	nonce := make([]byte, nonceBytes)
	_, _ = rand.Read(nonce) // crypto/rand.Read never fails
	out = append(out, nonce...)
	return k.aead.Seal(out, nonce, plain, secretAAD(m.GetNamespace(), m.GetName())), nil
}

// open returns obj with its Secret data in plaintext: obj itself unless it
// is a Secret in the encrypted form, else a decrypted copy (obj may be
// shared with the store and is never modified).
func (b *secretBox) open(obj *pb.Object) (*pb.Object, error) {
	sec := obj.GetSecret()
	if sec == nil {
		return obj, nil
	}
	keyName, payload, ok := sealedData(sec.GetData())
	if !ok {
		return obj, nil
	}
	data, err := b.decrypt(sec.GetMetadata(), keyName, payload)
	if err != nil {
		return nil, err
	}
	out := obj.Clone()
	out.GetSecret().Data = data
	return out, nil
}

// openAll decrypts the Secrets among items in place in the slice.
func (b *secretBox) openAll(items []*pb.Object) error {
	for i, o := range items {
		var err error
		if items[i], err = b.open(o); err != nil {
			return err
		}
	}
	return nil
}

// seal replaces o's Secret data (and stringData, merged into it first, as
// the store would) by the encrypted form, in place. o is the leader's own
// copy about to be proposed; cur is the stored object or nil. When cur holds
// the same data under the first key its ciphertext is kept, so an unchanged
// write stays unchanged.
func (b *secretBox) seal(o, cur *pb.Object) error {
	sec := o.GetSecret()
	if sec == nil || !b.enabled() {
		return nil
	}
	m := sec.GetMetadata()
	data := sec.GetData()
	if len(sec.GetStringData()) > 0 {
		data = maps.Clone(data)
		if data == nil {
			data = make(map[string][]byte, len(sec.GetStringData()))
		}
		for k, v := range sec.GetStringData() {
			data[k] = []byte(v)
		}
		sec.StringData = nil
	}
	if len(data) == 0 {
		sec.Data = nil
		return nil // nothing to hide
	}
	if c := cur.GetSecret(); c != nil {
		if keyName, payload, ok := sealedData(c.GetData()); ok && keyName == b.keys[0].name {
			if old, err := b.decrypt(m, keyName, payload); err == nil && sameData(old, data) {
				sec.Data = maps.Clone(c.GetData()) // the store's map is shared
				return nil
			}
		}
	}
	blob, err := b.encrypt(m, data)
	if err != nil {
		return err
	}
	sec.Data = map[string][]byte{encryptedDataKey: blob}
	return nil
}

func sameData(a, b map[string][]byte) bool {
	return maps.EqualFunc(a, b, bytes.Equal)
}

// openWrite decrypts a write response's object for the caller. The write
// itself succeeded, so a Secret this master cannot decrypt (the leader
// encrypted it with a key this one lacks) comes back without its data
// rather than as an error.
func (s *Server) openWrite(resp *pb.WriteResponse, err error) (*pb.WriteResponse, error) {
	if err != nil || resp.GetObject().GetSecret() == nil {
		return resp, err
	}
	obj, oerr := s.secrets.open(resp.GetObject())
	if oerr != nil {
		s.log.Warn("cannot decrypt the Secret in a write response", "err", oerr)
		obj = resp.GetObject().Clone()
		obj.GetSecret().Data = nil
	}
	return &pb.WriteResponse{Object: obj, Action: resp.GetAction()}, nil
}

// openInput turns a Secret in the encrypted form, as controllers on the
// leader read it from the local store and write it back, into plaintext
// before it is checked and encrypted again.
func (s *Server) openInput(obj *pb.Object) (*pb.Object, error) {
	out, err := s.secrets.open(obj)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument,
			"data.%s: the data is in skiff's encrypted form and cannot be decrypted here: %s",
			encryptedDataKey, status.Convert(err).Message())
	}
	return out, nil
}

// sealSecret encrypts o's data on the leader just before it is proposed.
func (s *Server) sealSecret(o *pb.Object) error {
	if o.GetSecret() == nil || !s.secrets.enabled() {
		return nil
	}
	m := o.Meta()
	cur, _ := s.fsm.Get(o.KindName(), m.GetNamespace(), m.GetName())
	return s.secrets.seal(o, cur)
}

// warnSecretsAtRest says at start what an operator should know: Secrets are
// in plaintext without a key file, and a key file others can read gives the
// keys away.
func (s *Server) warnSecretsAtRest() {
	if !s.secrets.enabled() {
		s.log.Warn("Secrets are stored unencrypted in the Raft log and snapshots: start every master with the same --encryption-key-file to encrypt them at rest")
		return
	}
	if fi, err := os.Stat(s.cfg.EncryptionKeyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		s.log.Warn("the encryption key file is readable by other users: chmod 600 it", "path", s.cfg.EncryptionKeyFile, "mode", fi.Mode().Perm())
	}
	s.log.Info("Secrets are encrypted at rest", "key", s.secrets.keys[0].name, "keys", len(s.secrets.keys))
}
