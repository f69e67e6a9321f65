package store

import (
	"errors"
	"path/filepath"
	"testing"
)

type rec struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

func TestBoltRoundTripAndRollback(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx Tx) error {
		for _, id := range []string{"ws-b", "ws-a"} {
			if err := PutJSON(tx, Workspaces, id, rec{id, "PENDING"}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A failed transaction leaves nothing behind.
	boom := errors.New("boom")
	if err := s.Update(func(tx Tx) error {
		if err := PutJSON(tx, Workspaces, "ws-a", rec{"ws-a", "AVAILABLE"}); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("Update returned %v", err)
	}
	// Reopen: what was committed is durable, in key order.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = OpenBolt(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got []rec
	if err := s.View(func(tx Tx) error {
		got, err = ListJSON[rec](tx, Workspaces)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "ws-a" || got[0].State != "PENDING" || got[1].ID != "ws-b" {
		t.Fatalf("got %+v", got)
	}
	if err := s.View(func(tx Tx) error {
		_, err := GetJSON[rec](tx, Workspaces, "ws-zzz")
		return err
	}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}
	if err := s.Update(func(tx Tx) error { return tx.Delete(Workspaces, "ws-a") }); err != nil {
		t.Fatal(err)
	}
	if err := s.View(func(tx Tx) error { _, err := tx.Get(Workspaces, "ws-a"); return err }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted key: %v", err)
	}
}

func TestBoltSecondOpenFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := OpenBolt(path); err == nil {
		t.Fatal("a second open of a locked store succeeded")
	}
}
