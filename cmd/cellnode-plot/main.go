// Command cellnode-plot draws the simulator's find latency, in round trips,
// against network size, as a PNG, from the reports that `cellnode sim
// --json` prints (one report, or a sweep):
//
//	cellnode sim --sweep 50,100,200,500,1000 --baseline --json > sweep.json
//	go run ./cmd/cellnode-plot -o latency.png sweep.json
//
// With no file, or "-", it reads standard input; several files are drawn
// together. It is a command of its own so that the plotting libraries stay
// out of the cellnode binary (see sim/simplot).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/cellnode/cellnode/sim"
	"github.com/cellnode/cellnode/sim/simplot"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "cellnode-plot:", err)
		var u usage
		if errors.As(err, &u) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usage struct{ error }

// run parses args, reads the reports and writes the plot. The output file
// is written only once every input has been read, and removed again if
// drawing fails, so that a bad input leaves no half-written PNG.
func run(args []string, stdin io.Reader, stderr io.Writer) error {
	fs := flag.NewFlagSet("cellnode-plot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "write the PNG to this file (required)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: cellnode-plot -o FILE.png [REPORT.json ...]   (no file, or -, reads standard input)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return usage{err}
	}
	if *out == "" {
		fs.Usage()
		return usage{errors.New("-o FILE.png is required")}
	}
	files := fs.Args()
	if len(files) == 0 {
		files = []string{"-"}
	}
	var reps []*sim.Report
	for _, f := range files {
		r, err := read(f, stdin)
		if err != nil {
			return err
		}
		reps = append(reps, r...)
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	if err := simplot.Write(f, reps); err != nil {
		f.Close()
		os.Remove(*out)
		return err
	}
	return f.Close()
}

func read(name string, stdin io.Reader) ([]*sim.Report, error) {
	if name == "-" {
		reps, err := simplot.Read(stdin)
		if err != nil {
			return nil, fmt.Errorf("standard input: %w", err)
		}
		return reps, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	reps, err := simplot.Read(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return reps, nil
}
