package datadir

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
)

func TestNodeRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); !errors.Is(err, ErrNoNode) || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "shoal init") {
		t.Fatalf("missing node.json: %v", err)
	}
	if Exists(dir) {
		t.Fatal("Exists on an empty dir")
	}
	want := &Node{NodeID: "n1", ClusterID: "c1", AdvertiseAddr: "127.0.0.21:4242", ListenAddr: "127.0.0.21:4242", Role: "manager",
		Managers: []string{"a", "b"}, AgentAddr: "127.0.0.21:4243", Bridge: "br1", BridgeSubnet: "10.1.0.0/24",
		InsecureRegistries: []string{"r:5000"}, CgroupParent: "/x"}
	if err := want.Save(dir); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, %v; want %+v", got, err, want)
	}
	if !Exists(dir) {
		t.Fatal("Exists after Save")
	}
	if fi, err := os.Stat(Dir(dir).NodeFile()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("node.json mode %v, %v; want 0600 (it names the cluster)", fi.Mode(), err)
	}
	if _, err := os.Stat(Dir(dir).NodeFile() + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left behind: %v", err)
	}
}

// TestLoadGarbled: a file that is not a node state names the file and says so.
func TestLoadGarbled(t *testing.T) {
	for _, content := range []string{`{"node_id": "n1", "man`, "\x00\x00\x00", `["a list"]`, `{"managers": "not a list"}`} {
		dir := t.TempDir()
		if err := os.WriteFile(Dir(dir).NodeFile(), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(dir)
		if err == nil || !strings.Contains(err.Error(), Dir(dir).NodeFile()) || !strings.Contains(err.Error(), "not a node state file") {
			t.Errorf("%q: err = %v, want one naming the file", content, err)
		}
		if errors.Is(err, ErrNoNode) {
			t.Errorf("%q: a garbled file is not a missing one: %v", content, err)
		}
	}
}

// TestSaveNeverShowsPart: readers racing with saves of different sizes
// only ever see a whole file, the old or the new one; and what a crash
// before the rename leaves (a partial temporary file) does not touch it.
func TestSaveNeverShowsPart(t *testing.T) {
	dir := t.TempDir()
	small := &Node{NodeID: "small"}
	big := &Node{NodeID: "big", Managers: make([]string, 500)}
	for i := range big.Managers {
		big.Managers[i] = "10.0.0.1:4242"
	}
	if err := small.Save(dir); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, err := Load(dir)
			if err != nil || (n.NodeID != "small" && n.NodeID != "big") || (n.NodeID == "big" && len(n.Managers) != 500) {
				bad = errors.Join(bad, err, errors.New("saw a part of node.json"))
				return
			}
		}
	}()
	for i := 0; i < 300; i++ {
		n := small
		if i%2 == 0 {
			n = big
		}
		if err := n.Save(dir); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if bad != nil {
		t.Fatal(bad)
	}

	// A crash after writing part of the temporary file, before the rename.
	if err := os.WriteFile(Dir(dir).NodeFile()+".tmp", []byte(`{"node_id": "ne`), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := Load(dir); err != nil || n.NodeID != "small" {
		t.Fatalf("after a crash before the rename: %+v, %v; want the old file", n, err)
	}
	// The next save is not hindered by the leftover.
	if err := big.Save(dir); err != nil {
		t.Fatal(err)
	}
	if n, err := Load(dir); err != nil || n.NodeID != "big" {
		t.Fatalf("after the next save: %+v, %v", n, err)
	}
}

// TestSaveSyncsDir: the rename is made durable by syncing the directory,
// after the rename (before it, the directory entry would not be new yet).
func TestSaveSyncsDir(t *testing.T) {
	dir := t.TempDir()
	var synced []string
	syncDir = func(d string) error {
		if _, err := os.Stat(Dir(dir).NodeFile()); err != nil {
			t.Errorf("directory synced before the rename: %v", err)
		}
		synced = append(synced, d)
		return fsyncDir(d)
	}
	t.Cleanup(func() { syncDir = fsyncDir })
	if err := (&Node{NodeID: "n1"}).Save(dir); err != nil {
		t.Fatal(err)
	}
	if len(synced) != 1 || synced[0] != dir {
		t.Fatalf("synced %q, want [%q]", synced, dir)
	}
	// A failing directory sync is reported, not swallowed.
	syncDir = func(string) error { return errors.New("disk gone") }
	if err := (&Node{NodeID: "n2"}).Save(dir); err == nil || !strings.Contains(err.Error(), "disk gone") {
		t.Fatalf("save with a failing dir sync: %v", err)
	}
}

func TestFsyncDirMissing(t *testing.T) {
	if err := fsyncDir(t.TempDir() + "/nope"); err == nil {
		t.Fatal("fsyncDir of a missing dir succeeded")
	}
}
