package e2e

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// simAPI is a simulated cluster behind the dashboard's URL scheme (the
// /v1/ JSON API: protojson of the real messages, NDJSON streams, bearer
// tokens, errors {code, message}), to measure the dashboard at a size no
// machine here runs for real (1,000 services, 10,000–100,000 tasks,
// 5,000 nodes). Writes are applied at once, with the events a real store
// would send; a scale makes or removes RUNNING tasks in the same step.
type simAPI struct {
	mu       sync.Mutex
	index    uint64
	nodes    map[string]*shoalv1.Node
	services map[string]*shoalv1.Service
	tasks    map[string]*shoalv1.Task
	networks []*shoalv1.Network
	events   []*shoalv1.WatchEvent // every event, index order
	changed  chan struct{}         // closed and replaced on each event
	// retained is the oldest index a watch may resume from (compact);
	// kick is closed to end every watch stream (a restarted manager).
	retained uint64
	kick     chan struct{}
	tokens   map[string]string // bearer token -> role
	// drops counts, per path, the next requests whose connection is closed
	// with no answer: the browser's "Failed to fetch", as when its host's
	// network changes or a manager restarts.
	drops map[string]int
}

// dropNext closes the connection of the next n requests to path unanswered.
func (s *simAPI) dropNext(path string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drops[path] += n
}

// dropped closes r's connection unanswered if a drop is due for its path.
func (s *simAPI) dropped(w http.ResponseWriter, r *http.Request) bool {
	s.mu.Lock()
	due := s.drops[r.URL.Path] > 0
	if due {
		s.drops[r.URL.Path]--
	}
	s.mu.Unlock()
	if !due {
		return false
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err) // httptest's HTTP/1.1 server can hijack
	}
	conn.Close()
	return true
}

var simJSON = protojson.MarshalOptions{EmitUnpopulated: true}

func newSimAPI(nNodes, nServices, tasksPerService int) *simAPI {
	s := &simAPI{
		nodes: map[string]*shoalv1.Node{}, services: map[string]*shoalv1.Service{}, tasks: map[string]*shoalv1.Task{},
		changed: make(chan struct{}), kick: make(chan struct{}), drops: map[string]int{},
		tokens: map[string]string{"shoal_view_viewersecret": "viewer", "shoal_oper_operatorsecret": "operator"},
	}
	now := timestamppb.Now()
	for i := 0; i < nNodes; i++ {
		role := shoalv1.NodeRole_NODE_ROLE_WORKER
		var ms *shoalv1.ManagerStatus
		if i < 3 {
			role = shoalv1.NodeRole_NODE_ROLE_MANAGER
			ms = &shoalv1.ManagerStatus{Addr: fmt.Sprintf("10.0.%d.%d:4242", i/250, i%250+1), Leader: i == 0, Reachability: "reachable"}
		}
		id := fmt.Sprintf("n%011d%013d", i, i)
		s.nodes[id] = &shoalv1.Node{
			Meta:        &shoalv1.Meta{Id: id, Version: 1, CreatedAt: now, UpdatedAt: now},
			Spec:        &shoalv1.NodeSpec{Name: fmt.Sprintf("host-%04d", i)},
			Description: &shoalv1.NodeDescription{Hostname: fmt.Sprintf("host-%04d", i), Os: "linux", Arch: "amd64", Resources: &shoalv1.Resources{NanoCpus: 8e9, MemoryBytes: 16 << 30}},
			Status:      &shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_READY, Addr: fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), LastHeartbeat: now, GossipState: "alive"},
			Role:        role, ManagerStatus: ms,
		}
	}
	s.networks = []*shoalv1.Network{{
		Meta: &shoalv1.Meta{Id: "net0000000000000000000000", Version: 1},
		Spec: &shoalv1.NetworkSpec{Name: "backend", Driver: "overlay", Attachable: true}, Vni: 4097, Subnet: "10.10.0.0/16", Gateway: "10.10.0.1",
	}}
	nodeIDs := s.sortedNodeIDs()
	for i := 0; i < nServices; i++ {
		id := fmt.Sprintf("s%011d%013d", i, i)
		name := fmt.Sprintf("svc-%04d", i)
		if i == 0 {
			name = "web"
		}
		svc := &shoalv1.Service{
			Meta: &shoalv1.Meta{Id: id, Version: 1, CreatedAt: now, UpdatedAt: now},
			Spec: &shoalv1.ServiceSpec{Name: name, Replicas: int64(tasksPerService), Task: &shoalv1.TaskSpec{
				Container: &shoalv1.ContainerSpec{Image: "registry.local/demo:1"},
				Resources: &shoalv1.ResourceRequirements{Reservations: &shoalv1.Resources{NanoCpus: 25e7, MemoryBytes: 64 << 20}},
			}, Endpoint: &shoalv1.EndpointSpec{Ports: []*shoalv1.PortConfig{{Protocol: "tcp", TargetPort: 80, PublishedPort: uint32(30000 + i%2000)}}}},
			UpdateStatus: &shoalv1.UpdateStatus{State: shoalv1.UpdateState_UPDATE_STATE_COMPLETED, Message: "update completed"},
		}
		s.services[id] = svc
		for slot := 1; slot <= tasksPerService; slot++ {
			s.addTask(svc, uint64(slot), nodeIDs[(i*tasksPerService+slot)%len(nodeIDs)])
		}
	}
	return s
}

func (s *simAPI) sortedNodeIDs() []string {
	ids := make([]string, 0, len(s.nodes))
	for id := range s.nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (s *simAPI) addTask(svc *shoalv1.Service, slot uint64, node string) *shoalv1.Task {
	now := timestamppb.Now()
	n := len(s.tasks)
	t := &shoalv1.Task{
		Meta:      &shoalv1.Meta{Id: fmt.Sprintf("%x", sha256.Sum256([]byte(fmt.Sprint(svc.GetMeta().GetId(), slot, n))))[:25], Version: 1, CreatedAt: now, UpdatedAt: now},
		ServiceId: svc.GetMeta().GetId(), ServiceName: svc.GetSpec().GetName(), Slot: slot, NodeId: node,
		DesiredState: shoalv1.TaskState_TASK_STATE_RUNNING, Spec: svc.GetSpec().GetTask(),
		Status: &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING, Timestamp: now, Message: "started",
			Addresses: []string{fmt.Sprintf("10.10.%d.%d", (n/250)%250, n%250+2)}, ImageDigest: "sha256:4f1cd2a9e0b7c3d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d"},
	}
	s.tasks[t.Meta.Id] = t
	return t
}

// emit records an event for obj (mu held) and wakes the watchers.
func (s *simAPI) emit(action shoalv1.WatchAction, obj *shoalv1.StoreObject) {
	s.index++
	s.events = append(s.events, &shoalv1.WatchEvent{Index: s.index, Action: action, Object: proto.Clone(obj).(*shoalv1.StoreObject)})
	close(s.changed)
	s.changed = make(chan struct{})
}

// kickStreams ends every watch stream before it sends another event (mu
// held).
func (s *simAPI) kickStreams() {
	close(s.kick)
	s.kick = make(chan struct{})
}

// compact forgets the events so far: a watch resuming from one of them
// gets OUT_OF_RANGE (mu held).
func (s *simAPI) compact() { s.retained = s.index + 1 }

// Change applies fn under the lock (for the test's own changes).
func (s *simAPI) Change(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn()
}

// scale sets a service's replicas: tasks above it stop, missing slots start.
func (s *simAPI) scale(svc *shoalv1.Service) {
	want := uint64(svc.GetSpec().GetReplicas())
	have := map[uint64]bool{}
	for _, t := range s.tasks {
		if t.GetServiceId() != svc.GetMeta().GetId() || t.GetDesiredState() != shoalv1.TaskState_TASK_STATE_RUNNING {
			continue
		}
		if t.GetSlot() > want {
			t.DesiredState = shoalv1.TaskState_TASK_STATE_SHUTDOWN
			t.Status.State = shoalv1.TaskState_TASK_STATE_SHUTDOWN
			t.Meta.Version++
			s.emit(shoalv1.WatchAction_WATCH_ACTION_UPDATE, &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Task{Task: t}})
			continue
		}
		have[t.GetSlot()] = true
	}
	ids := s.sortedNodeIDs()
	for slot := uint64(1); slot <= want; slot++ {
		if !have[slot] {
			t := s.addTask(svc, slot, ids[int(slot)%len(ids)])
			s.emit(shoalv1.WatchAction_WATCH_ACTION_CREATE, &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Task{Task: t}})
		}
	}
}

type simError struct {
	status int
	code   int
	msg    string
}

func (s *simAPI) writeErr(w http.ResponseWriter, e simError) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": e.code, "message": e.msg, "details": []any{}})
}

func (s *simAPI) writeMsg(w http.ResponseWriter, m proto.Message) {
	b, err := simJSON.Marshal(m)
	if err != nil {
		s.writeErr(w, simError{500, 13, err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// page cuts a sorted list by page.page_size / page.page_token (an offset).
func page[T any](r *http.Request, all []T) ([]T, string) {
	size, _ := strconv.Atoi(r.URL.Query().Get("page.page_size"))
	off, _ := strconv.Atoi(r.URL.Query().Get("page.page_token"))
	if size <= 0 || off >= len(all) {
		if off >= len(all) && off > 0 {
			return nil, ""
		}
		return all, ""
	}
	end := min(off+size, len(all))
	next := ""
	if end < len(all) {
		next = strconv.Itoa(end)
	}
	return all[off:end], next
}

func filter(r *http.Request, key string) string { return r.URL.Query().Get("filters[" + key + "]") }

func enumIs(name, want string) bool {
	return want == "" || strings.HasSuffix(strings.ToLower(name), "_"+strings.ReplaceAll(strings.ToLower(want), "-", "_"))
}

func (s *simAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.dropped(w, r) {
		return
	}
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	role, ok := s.tokens[tok]
	if !ok {
		s.writeErr(w, simError{401, 16, "token not valid: unknown, expired or revoked"})
		return
	}
	write := r.Method != http.MethodGet
	if write && role == "viewer" {
		s.writeErr(w, simError{403, 7, fmt.Sprintf("role viewer may not call %s %s", r.Method, r.URL.Path)})
		return
	}
	p := r.URL.Path
	switch {
	case p == "/v1/events":
		s.watch(w, r)
		return
	case p == "/v1/logs":
		s.logs(w, r)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case p == "/v1/cluster" && r.Method == http.MethodGet:
		s.writeMsg(w, &shoalv1.GetClusterResponse{Cluster: &shoalv1.Cluster{Meta: &shoalv1.Meta{Id: "cluster"}, Name: "sim"}})
	case p == "/v1/nodes":
		var out []*shoalv1.Node
		for _, id := range s.sortedNodeIDs() {
			n := s.nodes[id]
			if strings.HasPrefix(n.GetSpec().GetName(), filter(r, "name")) && enumIs(n.GetRole().String(), filter(r, "role")) &&
				enumIs(n.GetSpec().GetAvailability().String(), filter(r, "availability")) && enumIs(n.GetStatus().GetState().String(), filter(r, "state")) {
				out = append(out, n)
			}
		}
		pg, next := page(r, out)
		s.writeMsg(w, &shoalv1.ListNodesResponse{Nodes: pg, NextPageToken: next, Total: int64(len(out))})
	case strings.HasPrefix(p, "/v1/nodes/"):
		n := s.nodes[strings.TrimPrefix(p, "/v1/nodes/")]
		if n == nil {
			s.writeErr(w, simError{404, 5, fmt.Sprintf("node %q not found", strings.TrimPrefix(p, "/v1/nodes/"))})
			return
		}
		if r.Method == http.MethodPatch {
			var req shoalv1.UpdateNodeRequest
			if err := s.read(r, &req); err != nil {
				s.writeErr(w, *err)
				return
			}
			if req.GetVersion() != n.GetMeta().GetVersion() {
				s.writeErr(w, simError{409, 10, "version conflict"})
				return
			}
			n.Spec = req.GetSpec()
			n.Meta.Version++
			s.emit(shoalv1.WatchAction_WATCH_ACTION_UPDATE, &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Node{Node: n}})
			s.writeMsg(w, &shoalv1.UpdateNodeResponse{Node: n})
			return
		}
		s.writeMsg(w, &shoalv1.GetNodeResponse{Node: n})
	case p == "/v1/services":
		var out []*shoalv1.Service
		for _, sv := range s.services {
			if strings.HasPrefix(sv.GetSpec().GetName(), filter(r, "name")) {
				out = append(out, sv)
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].GetSpec().GetName() < out[j].GetSpec().GetName() })
		pg, next := page(r, out)
		counts := map[string]*shoalv1.ReplicaCount{}
		for _, sv := range pg {
			counts[sv.GetMeta().GetId()] = &shoalv1.ReplicaCount{Desired: sv.GetSpec().GetReplicas()}
		}
		for _, t := range s.tasks {
			if c := counts[t.GetServiceId()]; c != nil && t.GetStatus().GetState() == shoalv1.TaskState_TASK_STATE_RUNNING && t.GetDesiredState() == shoalv1.TaskState_TASK_STATE_RUNNING {
				c.Running++
			}
		}
		s.writeMsg(w, &shoalv1.ListServicesResponse{Services: pg, Replicas: counts, NextPageToken: next, Total: int64(len(out))})
	case strings.HasPrefix(p, "/v1/services/"):
		id, verb, _ := strings.Cut(strings.TrimPrefix(p, "/v1/services/"), ":")
		sv := s.services[id]
		if sv == nil {
			s.writeErr(w, simError{404, 5, fmt.Sprintf("service %q not found", id)})
			return
		}
		switch {
		case verb == "rollback" && r.Method == http.MethodPost:
			s.writeMsg(w, &shoalv1.RollbackServiceResponse{Service: sv})
		case r.Method == http.MethodPatch:
			var req shoalv1.UpdateServiceRequest
			if err := s.read(r, &req); err != nil {
				s.writeErr(w, *err)
				return
			}
			if req.GetVersion() != sv.GetMeta().GetVersion() {
				s.writeErr(w, simError{409, 10, "version conflict"})
				return
			}
			sv.PreviousSpec, sv.Spec = sv.Spec, req.GetSpec()
			sv.Meta.Version++
			s.emit(shoalv1.WatchAction_WATCH_ACTION_UPDATE, &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Service{Service: sv}})
			s.scale(sv)
			s.writeMsg(w, &shoalv1.UpdateServiceResponse{Service: sv})
		default:
			s.writeMsg(w, &shoalv1.GetServiceResponse{Service: sv})
		}
	case p == "/v1/tasks":
		var out []*shoalv1.Task
		svcF, nodeF := filter(r, "service"), filter(r, "node")
		for _, t := range s.tasks {
			if svcF != "" && t.GetServiceId() != svcF && t.GetServiceName() != svcF || nodeF != "" && t.GetNodeId() != nodeF {
				continue
			}
			if enumIs(t.GetDesiredState().String(), filter(r, "desired-state")) && enumIs(t.GetStatus().GetState().String(), filter(r, "state")) {
				out = append(out, t)
			}
		}
		sort.Slice(out, func(i, j int) bool {
			if out[i].GetServiceName() != out[j].GetServiceName() {
				return out[i].GetServiceName() < out[j].GetServiceName()
			}
			return out[i].GetSlot() < out[j].GetSlot()
		})
		pg, next := page(r, out)
		s.writeMsg(w, &shoalv1.ListTasksResponse{Tasks: pg, NextPageToken: next, Total: int64(len(out))})
	case p == "/v1/networks":
		s.writeMsg(w, &shoalv1.ListNetworksResponse{Networks: s.networks})
	default:
		s.writeErr(w, simError{404, 5, "no such path " + p})
	}
}

func (s *simAPI) read(r *http.Request, m proto.Message) *simError {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return &simError{400, 3, err.Error()}
	}
	if err := protojson.Unmarshal(b, m); err != nil {
		return &simError{400, 3, err.Error()}
	}
	return nil
}

// streamLine writes one NDJSON line {"result": m} and flushes it.
func streamLine(w http.ResponseWriter, m proto.Message) error {
	b, err := simJSON.Marshal(m)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, "{\"result\":%s}\n", b); err != nil {
		return err
	}
	w.(http.Flusher).Flush()
	return nil
}

func (s *simAPI) watch(w http.ResponseWriter, r *http.Request) {
	from, _ := strconv.ParseUint(r.URL.Query().Get("from_index"), 10, 64)
	s.mu.Lock()
	if from == 0 {
		from = s.index + 1
	}
	compacted := from < s.retained
	kick := s.kick
	s.mu.Unlock()
	if compacted {
		s.writeErr(w, simError{400, 11, fmt.Sprintf("watch from index %d: no longer retained", from)})
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	for {
		s.mu.Lock()
		select {
		case <-kick:
			// Ended before it sends anything written after the kick.
			s.mu.Unlock()
			return
		default:
		}
		var batch []*shoalv1.WatchEvent
		if from <= s.index {
			batch = append(batch, s.events[from-1:]...)
			from = s.index + 1
		}
		ch := s.changed
		s.mu.Unlock()
		for _, ev := range batch {
			if streamLine(w, ev) != nil {
				return
			}
		}
		select {
		case <-r.Context().Done():
			return
		case <-kick:
			return
		case <-ch:
		}
	}
}

// logs follows a service's "log": one line per task every 200 ms.
func (s *simAPI) logs(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("service")
	s.mu.Lock()
	var svc *shoalv1.Service
	for _, sv := range s.services {
		if sv.GetSpec().GetName() == name {
			svc = sv
		}
	}
	s.mu.Unlock()
	if svc == nil {
		s.writeErr(w, simError{404, 5, fmt.Sprintf("service %q not found", name)})
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for n := 1; ; n++ {
		msg := &shoalv1.LogsResponse{Messages: []*shoalv1.LogMessage{{
			ServiceId: svc.GetMeta().GetId(), ServiceName: name, Slot: 1, Time: timestamppb.Now(), Stream: "stdout",
			Data: []byte(fmt.Sprintf("GET /healthz 200 request=%d\n", n)),
		}}}
		if streamLine(w, msg) != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}
