// etcd's own WAL reader on a directory of segments, for bench/wal.sh and the EpochWAL tests:
// `verify DIR` runs wal.Verify, `readall DIR` runs wal.OpenForRead and ReadAll (every entry in
// memory, as etcd does at startup), `dump DIR` does the same and prints each entry
// (index term type hex-data) and the HardState. Built offline against Debian's
// golang-etcd-server-dev (etcd 3.4).
package main

import (
	"encoding/hex"
	"fmt"
	"os"

	"go.etcd.io/etcd/wal"
	"go.etcd.io/etcd/wal/walpb"
	"go.uber.org/zap"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: etcd-wal-reader verify|readall|dump DIR")
		os.Exit(64)
	}
	dir := os.Args[2]
	switch os.Args[1] {
	case "verify":
		if err := wal.Verify(zap.NewNop(), dir, walpb.Snapshot{}); err != nil {
			fmt.Fprintln(os.Stderr, "wal.Verify:", err)
			os.Exit(1)
		}
		fmt.Println("verified")
	case "readall", "dump":
		w, err := wal.OpenForRead(zap.NewNop(), dir, walpb.Snapshot{})
		if err != nil {
			fmt.Fprintln(os.Stderr, "wal.OpenForRead:", err)
			os.Exit(1)
		}
		_, state, entries, err := w.ReadAll()
		if err != nil {
			fmt.Fprintln(os.Stderr, "ReadAll:", err)
			os.Exit(1)
		}
		if os.Args[1] == "readall" {
			fmt.Printf("%d entries, commit %d\n", len(entries), state.Commit)
			return
		}
		for _, e := range entries {
			fmt.Printf("%d %d %d %s\n", e.Index, e.Term, e.Type, hex.EncodeToString(e.Data))
		}
		fmt.Printf("state %d %d %d\n", state.Term, state.Vote, state.Commit)
	default:
		fmt.Fprintln(os.Stderr, "usage: etcd-wal-reader verify|readall|dump DIR")
		os.Exit(64)
	}
}
