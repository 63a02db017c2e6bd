package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// taskDB is the agent's local state: for each task it holds, the task as
// last assigned and the status last observed. It is what lets a restarted
// agent re-adopt running containers and report tasks that ended while it
// was away. One bbolt file; every write is its own fsynced transaction
// (status changes are rare next to container start costs).
type taskDB struct {
	db *bolt.DB
}

var bucketTasks = []byte("tasks")

// taskRecord is the stored form of one task. Protos are kept as bytes so
// that the record stays readable by newer agents as fields are added.
type taskRecord struct {
	Task   []byte `json:"task"`
	Status []byte `json:"status"`
}

func openTaskDB(dir string) (*taskDB, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := filepath.Join(dir, "state.db")
	db, err := bolt.Open(p, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening agent state %s: %w (is another shoal agent using this data dir?)", p, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketTasks)
		return err
	}); err != nil {
		db.Close()
		return nil, err
	}
	return &taskDB{db: db}, nil
}

func (d *taskDB) Close() error { return d.db.Close() }

// put records task and status (either may be nil: keep the stored one).
func (d *taskDB) put(id string, t *shoalv1.Task, st *shoalv1.TaskStatus) error {
	return d.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTasks)
		var rec taskRecord
		if old := b.Get([]byte(id)); old != nil {
			if err := json.Unmarshal(old, &rec); err != nil {
				return fmt.Errorf("task %q record: %w", id, err)
			}
		}
		var err error
		if t != nil {
			if rec.Task, err = proto.Marshal(t); err != nil {
				return err
			}
		}
		if st != nil {
			if rec.Status, err = proto.Marshal(st); err != nil {
				return err
			}
		}
		v, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		return b.Put([]byte(id), v)
	})
}

// taskWrite is one record of a putTasks: the task, and its status unless
// nil (then the stored status is kept).
type taskWrite struct {
	task   *shoalv1.Task
	status *shoalv1.TaskStatus
}

// putTasks records several tasks (and statuses, where given) in one
// transaction: all or none.
func (d *taskDB) putTasks(ws []taskWrite) error {
	return d.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTasks)
		for _, w := range ws {
			id := w.task.GetMeta().GetId()
			var rec taskRecord
			if old := b.Get([]byte(id)); old != nil {
				if err := json.Unmarshal(old, &rec); err != nil {
					return fmt.Errorf("task %q record: %w", id, err)
				}
			}
			var err error
			if rec.Task, err = proto.Marshal(w.task); err != nil {
				return err
			}
			if w.status != nil {
				if rec.Status, err = proto.Marshal(w.status); err != nil {
					return err
				}
			}
			v, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(id), v); err != nil {
				return err
			}
		}
		return nil
	})
}

func (d *taskDB) delete(id string) error {
	return d.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketTasks).Delete([]byte(id)) })
}

// storedTask is one task read back at start-up.
type storedTask struct {
	task   *shoalv1.Task
	status *shoalv1.TaskStatus
}

func (d *taskDB) all() (map[string]storedTask, error) {
	out := map[string]storedTask{}
	err := d.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTasks).ForEach(func(k, v []byte) error {
			var rec taskRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("task %q record: %w", k, err)
			}
			st := storedTask{task: &shoalv1.Task{}, status: &shoalv1.TaskStatus{}}
			if err := proto.Unmarshal(rec.Task, st.task); err != nil {
				return fmt.Errorf("task %q record: %w", k, err)
			}
			if err := proto.Unmarshal(rec.Status, st.status); err != nil {
				return fmt.Errorf("task %q record: %w", k, err)
			}
			if st.task.GetMeta().GetId() != string(k) {
				// A status recorded in the instant before its task was
				// (crash in between): the task was never started.
				return nil
			}
			out[string(k)] = st
			return nil
		})
	})
	return out, err
}
