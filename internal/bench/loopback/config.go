package loopback

import (
	"fmt"
	"strconv"
	"time"
)

// Config sizes a run. The zero value of each field means its default.
type Config struct {
	Rounds    int           // rounds of measures a–e; 0 means 10
	Sidecars  int           // long-lived sidecars announcing the found cell, each also a warm finder; 0 means 6
	Churn     int           // sidecars kept as peers to lose (SIGKILL); 0 means 4
	WarmFinds int           // warm finds per side per round; 0 means 20
	ColdFinds int           // cold finds per side per round; 0 means 3
	Stops     int           // SIGTERMs counted for lost withdrawals; 0 means 100
	Batch     int           // sidecars started and stopped together in that count; 0 means 10
	Survive   time.Duration // how long finds are watched after the bootstrap is killed; 0 means 2m
	// DHTMode, when not "", is passed to every sidecar as --dht-mode (auto,
	// server or client); "" runs them with the default flags.
	DHTMode string
}

// Env names the environment variables ConfigFromEnv reads, by Config field.
var Env = map[string]string{
	"Rounds":    "LOOPBACK_ROUNDS",
	"Sidecars":  "LOOPBACK_SIDECARS",
	"Churn":     "LOOPBACK_CHURN",
	"WarmFinds": "LOOPBACK_WARM_FINDS",
	"ColdFinds": "LOOPBACK_COLD_FINDS",
	"Stops":     "LOOPBACK_STOPS",
	"Batch":     "LOOPBACK_BATCH",
	"Survive":   "LOOPBACK_SURVIVE",
	"DHTMode":   "LOOPBACK_DHT_MODE",
}

// ConfigFromEnv reads a Config from the variables named in Env through
// getenv (os.Getenv in the benchmark), then applies the defaults. Unset or
// empty variables take the default; a value that is not a positive integer
// (a positive duration for LOOPBACK_SURVIVE; auto, server or client for
// LOOPBACK_DHT_MODE) is an error naming the variable.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	var c Config
	ints := []struct {
		field string
		dst   *int
	}{
		{"Rounds", &c.Rounds}, {"Sidecars", &c.Sidecars}, {"Churn", &c.Churn},
		{"WarmFinds", &c.WarmFinds}, {"ColdFinds", &c.ColdFinds}, {"Stops", &c.Stops}, {"Batch", &c.Batch},
	}
	for _, f := range ints {
		v := getenv(Env[f.field])
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return Config{}, fmt.Errorf("loopback: %s=%q: want a positive integer", Env[f.field], v)
		}
		*f.dst = n
	}
	if c.Sidecars == 1 {
		return Config{}, fmt.Errorf("loopback: %s=1: want at least 2 (an instance counts as findable when a node other than its own lists it)", Env["Sidecars"])
	}
	if v := getenv(Env["Survive"]); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return Config{}, fmt.Errorf("loopback: %s=%q: want a positive duration such as 2m", Env["Survive"], v)
		}
		c.Survive = d
	}
	switch v := getenv(Env["DHTMode"]); v {
	case "", "auto", "server", "client":
		c.DHTMode = v
	default:
		return Config{}, fmt.Errorf("loopback: %s=%q: want auto, server or client", Env["DHTMode"], v)
	}
	return c.withDefaults(), nil
}

// withDefaults fills zero fields with their defaults.
func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Rounds, 10)
	def(&c.Sidecars, 6)
	def(&c.Churn, 4)
	def(&c.WarmFinds, 20)
	def(&c.ColdFinds, 3)
	def(&c.Stops, 100)
	def(&c.Batch, 10)
	if c.Survive <= 0 {
		c.Survive = 2 * time.Minute
	}
	return c
}
