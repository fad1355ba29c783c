package e2e

// The chaos workload: concurrent clients doing creates, compare-and-set
// updates (metadata.resourceVersion preconditions) and linearizable reads
// of ConfigMaps, every operation recorded with its invocation and response
// time for the linearizability check; and a watch that resumes across
// failovers, recorded for the watch check.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

const chaosNS = "chaos"

type opKind uint8

const (
	opGet opKind = iota
	opCreate
	opUpdate
)

func (k opKind) String() string { return [...]string{"get", "create", "update"}[k] }

// kvInput is one operation on one ConfigMap (the key), whose data["v"] is
// the value. Every write writes a value never written before, so a value
// read names the write that produced it.
type kvInput struct {
	Op    opKind
	Key   string
	Value string // create, update
	ExpRV uint64 // update: the resourceVersion precondition
}

// kvOutput is what the operation returned.
type kvOutput struct {
	// Unknown: the write may or may not have been applied (codes.Unknown,
	// DeadlineExceeded, or Unavailable not marked NotApplied).
	Unknown bool
	Code    codes.Code // OK, NotFound, AlreadyExists, Aborted
	RV      uint64     // OK: the object's resourceVersion
	Value   string     // get OK: data["v"]
}

// opRecord is one operation as a client saw it.
type opRecord struct {
	Client int
	Pinned string // the only master the client talks to; "" for all
	In     kvInput
	Out    kvOutput
	Call   time.Duration // scenario clock
	Return time.Duration
	// Drop: certainly without effect and without an observation (a failed
	// read, a write refused as NotApplied): left out of the history.
	Drop       bool
	Err        string
	Unexpected bool // an error no fault explains (InvalidArgument, Internal, ...)
}

func (r opRecord) acked() bool {
	return r.In.Op != opGet && !r.Drop && !r.Out.Unknown && r.Out.Code == codes.OK
}

// outcome classifies a result by the API's error conventions
// (proto/api.proto, proto/status.go).
func outcome(op opKind, err error) (out kvOutput, drop, unexpected bool) {
	if err == nil {
		out.Code = codes.OK
		return out, false, false
	}
	code := status.Code(err)
	if errors.Is(err, context.DeadlineExceeded) {
		code = codes.DeadlineExceeded
	}
	switch {
	case code == codes.NotFound && op != opCreate,
		code == codes.AlreadyExists && op == opCreate,
		code == codes.Aborted && op == opUpdate:
		out.Code = code
		return out, false, false
	case op == opGet:
		// A failed read changes nothing and observes nothing.
		switch code {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Unknown, codes.Canceled:
			return out, true, false
		}
		return out, true, true
	case pb.IsNotApplied(err):
		return out, true, false
	}
	out.Unknown = true
	switch code {
	case codes.Unknown, codes.DeadlineExceeded, codes.Canceled, codes.Unavailable:
		return out, false, false
	}
	return out, false, true
}

// workload drives the clients and keeps the record.
type workload struct {
	cc        *chaosCluster
	opTimeout time.Duration
	hot       []string // keys every client contends on
	seed      int64

	stop    atomic.Bool
	stopped chan struct{}
	wg      sync.WaitGroup

	mu         sync.Mutex
	recs       []opRecord
	keys       []string        // shared keys a create was attempted for
	keySet     map[string]bool // every key a create was attempted for
	violations []string        // what sessions found wrong: a resourceVersion going back, an own key changed
	nextID     int
}

func newWorkload(cc *chaosCluster, p chaosParams, hotKeys int) *workload {
	w := &workload{cc: cc, opTimeout: p.opTimeout, seed: p.seed, stopped: make(chan struct{}), keySet: map[string]bool{}}
	for i := range hotKeys {
		w.hot = append(w.hot, fmt.Sprintf("hot-%d", i))
		w.addKey(w.hot[i], true)
	}
	return w
}

// ensureNamespace creates the workload's namespace.
func (w *workload) ensureNamespace() error {
	cl := w.cc.rotatedClient(0)
	return poll(30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := cl.Create(ctx, pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: chaosNS}}))
		if err == nil || status.Code(err) == codes.AlreadyExists {
			return nil
		}
		return err
	})
}

// addKey records a key a create was attempted for; shared keys may be
// picked by any contending client, the others belong to one client.
func (w *workload) addKey(k string, shared bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.keySet[k] {
		w.keySet[k] = true
		if shared {
			w.keys = append(w.keys, k)
		}
	}
}

func (w *workload) allKeys() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.keySet))
	for k := range w.keySet {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (w *workload) records() []opRecord {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]opRecord(nil), w.recs...)
}

func (w *workload) violate(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.violations = append(w.violations, fmt.Sprintf(format, args...))
}

// halt stops every client after its current operation and waits for them.
func (w *workload) halt() {
	if w.stop.CompareAndSwap(false, true) {
		close(w.stopped)
	}
	w.wg.Wait()
}

// pace waits d, or less if the workload stops: clients back off a little
// after an error rather than spinning.
func (w *workload) pace(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-w.stopped:
	}
}

// session is one client: its operations are sequential, and it checks that
// what it reads never goes back in time.
type session struct {
	w      *workload
	id     int
	cl     *client.Client
	pinned string
	rng    *rand.Rand
	seq    int
	seen   map[string]uint64 // highest resourceVersion seen per key
	known  map[string]uint64 // resourceVersion last learned per key
	listRV uint64            // highest List resourceVersion seen
}

func (w *workload) newSession(cl *client.Client, pinned string) *session {
	w.mu.Lock()
	id := w.nextID
	w.nextID++
	w.mu.Unlock()
	return &session{w: w, id: id, cl: cl, pinned: pinned,
		rng:  rand.New(rand.NewPCG(uint64(w.seed), uint64(id))),
		seen: map[string]uint64{}, known: map[string]uint64{}}
}

func (s *session) value() string {
	s.seq++
	return fmt.Sprintf("c%d-%d", s.id, s.seq)
}

func configMapWith(key, value string, rv uint64) *pb.Object {
	return pb.Wrap(&pb.ConfigMap{
		Metadata: &pb.ObjectMeta{Name: key, Namespace: chaosNS, ResourceVersion: rv},
		Data:     map[string]string{"v": value},
	})
}

// do runs one operation and records it.
func (s *session) do(in kvInput) opRecord {
	ctx, cancel := context.WithTimeout(context.Background(), s.w.opTimeout)
	defer cancel()
	rec := opRecord{Client: s.id, Pinned: s.pinned, In: in, Call: s.w.cc.now()}
	var (
		obj *pb.Object
		err error
	)
	switch in.Op {
	case opGet:
		obj, err = s.cl.Get(ctx, "ConfigMap", chaosNS, in.Key, client.ReadOptions{})
	case opCreate:
		var resp *pb.WriteResponse
		resp, err = s.cl.Create(ctx, configMapWith(in.Key, in.Value, 0))
		obj = resp.GetObject()
	case opUpdate:
		var resp *pb.WriteResponse
		resp, err = s.cl.Update(ctx, configMapWith(in.Key, in.Value, in.ExpRV))
		obj = resp.GetObject()
	}
	rec.Return = s.w.cc.now()
	rec.Out, rec.Drop, rec.Unexpected = outcome(in.Op, err)
	if err != nil {
		rec.Err = err.Error()
	}
	if rec.Out.Code == codes.OK && !rec.Drop && !rec.Out.Unknown {
		rec.Out.RV = obj.Meta().GetResourceVersion()
		rec.Out.Value = obj.GetConfigMap().GetData()["v"]
		if in.Op != opGet && rec.Out.Value != in.Value {
			rec.Unexpected = true
			rec.Err = fmt.Sprintf("%s of %s acknowledged with value %q, not %q", in.Op, in.Key, rec.Out.Value, in.Value)
		}
	}
	s.observe(rec)
	s.w.mu.Lock()
	s.w.recs = append(s.w.recs, rec)
	s.w.mu.Unlock()
	return rec
}

// observe checks that this client never sees a key's resourceVersion go
// back, and remembers what it learned.
func (s *session) observe(r opRecord) {
	if r.Drop || r.Out.Unknown {
		return
	}
	k := r.In.Key
	switch r.Out.Code {
	case codes.OK:
		if r.In.Op == opGet && r.Out.RV < s.seen[k] {
			s.w.violate("client %d (%s) read %s at resourceVersion %d after having seen %d (t=%s)",
				s.id, orAll(s.pinned), k, r.Out.RV, s.seen[k], r.Call)
		}
		s.seen[k] = max(s.seen[k], r.Out.RV)
		s.known[k] = r.Out.RV
	case codes.NotFound:
		if s.seen[k] > 0 {
			s.w.violate("client %d (%s) read %s as missing after having seen it at resourceVersion %d (t=%s)",
				s.id, orAll(s.pinned), k, s.seen[k], r.Call)
		}
		delete(s.known, k)
	}
}

func orAll(pinned string) string {
	if pinned == "" {
		return "all masters"
	}
	return "pinned to " + pinned
}

// list reads the whole namespace (linearizable) and checks that neither
// the list's resourceVersion nor any object's goes back.
func (s *session) list() {
	ctx, cancel := context.WithTimeout(context.Background(), s.w.opTimeout)
	defer cancel()
	items, rv, err := s.cl.List(ctx, "ConfigMap", client.ListOptions{Namespace: chaosNS})
	if err != nil {
		return
	}
	if rv < s.listRV {
		s.w.violate("client %d (%s) listed at resourceVersion %d after a list at %d", s.id, orAll(s.pinned), rv, s.listRV)
	}
	s.listRV = max(s.listRV, rv)
	for _, it := range items {
		k, irv := it.Meta().GetName(), it.Meta().GetResourceVersion()
		if irv < s.seen[k] {
			s.w.violate("client %d (%s) listed %s at resourceVersion %d after having seen %d", s.id, orAll(s.pinned), k, irv, s.seen[k])
		}
		s.seen[k] = max(s.seen[k], irv)
	}
}

// sessionKind is what a session does.
type sessionKind int

const (
	contended sessionKind = iota // reads, creates and compare-and-sets on shared keys
	own                          // writes keys no other session touches
	reader                       // only linearizable reads of the hot keys
)

// start runs n sessions with the given clients until halt.
func (w *workload) start(n int, clientFor func(i int) (*client.Client, string), kind sessionKind) {
	for i := range n {
		cl, pinned := clientFor(i)
		s := w.newSession(cl, pinned)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			switch kind {
			case own:
				s.runOwn()
			case reader:
				s.runReader()
			default:
				s.runContended()
			}
		}()
	}
}

// runReader reads hot keys, linearizably, as fast as it is answered.
func (s *session) runReader() {
	for !s.w.stop.Load() {
		rec := s.do(kvInput{Op: opGet, Key: s.w.hot[s.rng.IntN(len(s.w.hot))]})
		if s.failed(rec) {
			s.w.pace(time.Duration(20+s.rng.IntN(60)) * time.Millisecond)
		}
	}
}

func (s *session) failed(r opRecord) bool { return r.Drop || r.Out.Unknown }

// runContended: every client reads and compare-and-sets the same hot keys,
// creates keys of its own now and then, and lists the namespace.
func (s *session) runContended() {
	w := s.w
	for n := 0; !w.stop.Load(); n++ {
		r := s.rng.Float64()
		var rec opRecord
		switch {
		case n%50 == 49:
			s.list()
			continue
		case r < 0.08:
			key := fmt.Sprintf("c%d-k%d", s.id, s.seq+1)
			w.addKey(key, true)
			rec = s.do(kvInput{Op: opCreate, Key: key, Value: s.value()})
		default:
			key := w.pick(s.rng)
			if rv, ok := s.known[key]; ok && r < 0.3 {
				// A compare-and-set from what this client last saw: often
				// stale, so the precondition is exercised.
				rec = s.do(kvInput{Op: opUpdate, Key: key, Value: s.value(), ExpRV: rv})
				break
			}
			rec = s.do(kvInput{Op: opGet, Key: key})
			if s.failed(rec) {
				break
			}
			if rec.Out.Code == codes.NotFound {
				rec = s.do(kvInput{Op: opCreate, Key: key, Value: s.value()})
			} else {
				rec = s.do(kvInput{Op: opUpdate, Key: key, Value: s.value(), ExpRV: rec.Out.RV})
			}
		}
		if s.failed(rec) {
			w.pace(time.Duration(20+s.rng.IntN(60)) * time.Millisecond)
		}
	}
}

// pick chooses a key: mostly a hot one, else any key created so far.
func (w *workload) pick(rng *rand.Rand) string {
	if len(w.hot) > 0 && rng.Float64() < 0.7 {
		return w.hot[rng.IntN(len(w.hot))]
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.keys[rng.IntN(len(w.keys))]
}

// runOwn: each client writes keys nobody else touches, so every write
// should succeed: a failure is the system's, not contention's.
func (s *session) runOwn() {
	w := s.w
	const perClient = 4
	type own struct {
		created bool
		rv      uint64
		value   string
	}
	keys := make([]own, perClient)
	for n := 0; !w.stop.Load(); n++ {
		j := s.rng.IntN(perClient)
		key := fmt.Sprintf("own-%d-%d", s.id, j)
		k := &keys[j]
		switch {
		case !k.created:
			w.addKey(key, false)
			rec := s.do(kvInput{Op: opCreate, Key: key, Value: s.value()})
			if rec.acked() {
				k.created, k.rv, k.value = true, rec.Out.RV, rec.In.Value
			} else {
				s.resync(key, func(rv uint64, v string) { k.created, k.rv, k.value = true, rv, v })
			}
		case s.rng.Float64() < 0.2:
			rec := s.do(kvInput{Op: opGet, Key: key})
			if !s.failed(rec) && (rec.Out.Code != codes.OK || rec.Out.RV != k.rv || rec.Out.Value != k.value) {
				w.violate("client %d: %s is the client's own key, last written at resourceVersion %d with %q, but a read returned %v rv %d %q",
					s.id, key, k.rv, k.value, rec.Out.Code, rec.Out.RV, rec.Out.Value)
			}
		default:
			rec := s.do(kvInput{Op: opUpdate, Key: key, Value: s.value(), ExpRV: k.rv})
			if rec.acked() {
				k.rv, k.value = rec.Out.RV, rec.In.Value
			} else {
				s.resync(key, func(rv uint64, v string) { k.rv, k.value = rv, v })
			}
		}
	}
}

// resync learns a key's state after a write that failed.
func (s *session) resync(key string, set func(rv uint64, value string)) {
	for !s.w.stop.Load() {
		rec := s.do(kvInput{Op: opGet, Key: key})
		if s.failed(rec) {
			s.w.pace(50 * time.Millisecond)
			continue
		}
		if rec.Out.Code == codes.OK {
			set(rec.Out.RV, rec.Out.Value)
		}
		return
	}
}

// finalReads reads every key through every master (a linearizable list of
// the namespace on each, recorded as one read per key), so that a write
// lost after it was acknowledged shows up in the history.
func (w *workload) finalReads() error {
	keys := w.allKeys()
	for _, m := range w.cc.masters {
		cl := w.cc.pinnedClient(m)
		var items []*pb.Object
		var call, ret time.Duration
		err := poll(60*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			call = w.cc.now()
			var err error
			items, _, err = cl.List(ctx, "ConfigMap", client.ListOptions{Namespace: chaosNS})
			ret = w.cc.now()
			return err
		})
		if err != nil {
			return fmt.Errorf("final read on %s: %w", m.name, err)
		}
		have := map[string]*pb.Object{}
		for _, it := range items {
			have[it.Meta().GetName()] = it
		}
		w.mu.Lock()
		id := w.nextID
		w.nextID++
		for _, k := range keys {
			rec := opRecord{Client: id, Pinned: m.name, In: kvInput{Op: opGet, Key: k}, Call: call, Return: ret}
			if it, ok := have[k]; ok {
				rec.Out = kvOutput{Code: codes.OK, RV: it.Meta().GetResourceVersion(), Value: it.GetConfigMap().GetData()["v"]}
			} else {
				rec.Out = kvOutput{Code: codes.NotFound}
			}
			w.recs = append(w.recs, rec)
		}
		w.mu.Unlock()
	}
	return nil
}

// --- the watch ---

type watchEvent struct {
	Type  string
	Key   string
	RV    uint64 // the event's
	ObjRV uint64 // the object's metadata.resourceVersion
	Value string
}

// watchRecorder keeps one watch open for the whole scenario through a
// client of every master, which resumes it by itself on another master
// when the one serving it dies.
type watchRecorder struct {
	startRV uint64
	initial map[string]watchEvent // the namespace as listed before the watch

	mu     sync.Mutex
	events []watchEvent
	last   uint64
	err    error

	cancel context.CancelFunc
	done   chan struct{}
}

// startWatch opens the watch through a client of every master that tries
// first, so that killing the leader makes the watch resume elsewhere.
func startWatch(cc *chaosCluster, first *master) (*watchRecorder, error) {
	addrs := []string{first.apiAddr}
	for _, m := range cc.others(first) {
		addrs = append(addrs, m.apiAddr)
	}
	cl := cc.newClient(addrs)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	items, rv, err := cl.List(ctx, "ConfigMap", client.ListOptions{Namespace: chaosNS})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("list before watching: %w", err)
	}
	wr := &watchRecorder{startRV: rv, initial: map[string]watchEvent{}, last: rv, done: make(chan struct{})}
	for _, it := range items {
		wr.initial[it.Meta().GetName()] = watchEvent{Key: it.Meta().GetName(), ObjRV: it.Meta().GetResourceVersion(),
			Value: it.GetConfigMap().GetData()["v"]}
	}
	wctx, wcancel := context.WithCancel(context.Background())
	wr.cancel = wcancel
	octx, ocancel := context.WithTimeout(wctx, 20*time.Second)
	watcher, err := cl.Watch(octx, "ConfigMap", client.WatchOptions{Namespace: chaosNS, ResourceVersion: rv, BookmarkSeconds: 1})
	ocancel()
	if err != nil {
		wcancel()
		return nil, fmt.Errorf("watch: %w", err)
	}
	go func() {
		defer close(wr.done)
		defer watcher.Close()
		for {
			ev, err := watcher.Next(wctx)
			if err != nil {
				if wctx.Err() == nil {
					wr.mu.Lock()
					wr.err = err
					wr.mu.Unlock()
				}
				return
			}
			obj := ev.GetObject()
			we := watchEvent{Type: ev.GetType(), Key: obj.Meta().GetName(), RV: ev.GetResourceVersion(),
				ObjRV: obj.Meta().GetResourceVersion(), Value: obj.GetConfigMap().GetData()["v"]}
			wr.mu.Lock()
			wr.events = append(wr.events, we)
			wr.last = max(wr.last, we.RV)
			wr.mu.Unlock()
		}
	}()
	return wr, nil
}

// waitFor polls until the watch has delivered index rv.
func (wr *watchRecorder) waitFor(rv uint64, within time.Duration) error {
	return poll(within, func() error {
		wr.mu.Lock()
		defer wr.mu.Unlock()
		if wr.err != nil {
			return wr.err
		}
		if wr.last < rv {
			return fmt.Errorf("the watch delivered up to %d of %d", wr.last, rv)
		}
		return nil
	})
}

func (wr *watchRecorder) finish() ([]watchEvent, error) {
	wr.cancel()
	<-wr.done
	wr.mu.Lock()
	defer wr.mu.Unlock()
	return append([]watchEvent(nil), wr.events...), wr.err
}
