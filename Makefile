# lb — build, run the demo, test, benchmark, fuzz.
#   make            build ./lb (BearSSL and inih linked statically)
#   make TLS=openssl  build ./lb on OpenSSL 3 instead (TLS 1.3, session tickets); make lb-openssl: both
#   make run        demo: three backends + lb serving config.ini on 127.0.0.1:8080
#   make test       unit + integration (epoll, poll, ASan builds) + fuzz smoke; ends "N passed, N failed"
#   make bench      lb vs HAProxy vs nginx (Debian packages) with wrk; writes tests/bench/results.md
#   make fuzz       FUZZ=request|response|chunked|config|values|proxy|admin|x509|conn SECS=60 ENGINE=libfuzzer|afl
#   make asan       ./lb-asan and tests/unit-asan
#   make lb-static  ./lb-static: fully static (musl-gcc from musl-tools), stripped
#   make scaler     ./linode-scaler (deploy/linode-scaler.c, libcurl)
CC      ?= cc
CFLAGS  ?= -O2 -g
WARN    := -std=c11 -Wall -Wextra -Werror
LIBS    := -l:libbearssl.a -l:libinih.a -l:libnghttp2.a
# HTTP/2 (nghttp2, static): `cc lb.c -lbearssl -linih` without -DLB_HTTP2 builds an HTTP/1.1-only lb (lb-static too)
H2      := -DLB_HTTP2
# the TLS library of ./lb: bearssl (default) or openssl; ./lb-openssl is always the OpenSSL build
TLS     ?= bearssl
OSSL_LIBS := -l:libinih.a -l:libnghttp2.a -lssl -lcrypto
ifeq ($(TLS),openssl)
LB_TLS  := -DLB_TLS_OPENSSL
LB_LIBS := $(OSSL_LIBS)
else
LB_TLS  :=
LB_LIBS := $(LIBS)
endif
SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
PREFIX  ?= /usr/local
FUZZ    ?= request
SECS    ?= 60
ENGINE  ?= libfuzzer
FUZZERS := request response chunked config values proxy admin x509 conn
# the dictionary of a harness: fuzz/dict/NAME.dict when there is one, else ini.dict for the
# configuration harnesses (config, values) and http.dict for the others
fuzz_dict = $(firstword $(wildcard fuzz/dict/$(1).dict) fuzz/dict/$(if $(filter config values,$(1)),ini,http).dict)

.PHONY: all run test bench fuzz fuzz-campaign asan deps deps-test deps-bench install clean check
MINUTES ?= 4

all: lb

lb: lb.c lb.h
	$(CC) $(WARN) $(CFLAGS) $(H2) $(LB_TLS) lb.c -o $@ $(LB_LIBS)

lb-openssl: lb.c lb.h
	$(CC) $(WARN) $(CFLAGS) $(H2) -DLB_TLS_OPENSSL lb.c -o $@ $(OSSL_LIBS)

lb-poll: lb.c lb.h
	$(CC) $(WARN) $(CFLAGS) $(H2) -DLB_POLL lb.c -o $@ $(LIBS)

# a fully static binary (musl libc, BearSSL and inih): one file to copy to a VM
MUSL_LIBDIR := /usr/lib/x86_64-linux-gnu
lb-static: lb.c lb.h deploy/musl-fortify.c
	musl-gcc $(WARN) -Os -static -idirafter /usr/include -idirafter /usr/include/x86_64-linux-gnu \
		lb.c deploy/musl-fortify.c -o $@ $(MUSL_LIBDIR)/libbearssl.a $(MUSL_LIBDIR)/libinih.a
	strip $@

lb-asan: lb.c lb.h
	$(CC) $(WARN) -O1 -g $(SAN) $(H2) lb.c -o $@ $(LIBS)

# the OpenSSL build under ASan and UBSan: make test runs the TLS suite on it
lb-openssl-asan: lb.c lb.h
	$(CC) $(WARN) -O1 -g $(SAN) $(H2) -DLB_TLS_OPENSSL lb.c -o $@ $(OSSL_LIBS)

tests/unit: tests/unit.c lb.c lb.h
	$(CC) $(WARN) -O1 -g $(H2) -DLB_NO_MAIN -I. tests/unit.c lb.c -o $@ $(LIBS)

tests/unit-asan: tests/unit.c lb.c lb.h
	$(CC) $(WARN) -O1 -g $(SAN) $(H2) -DLB_NO_MAIN -I. tests/unit.c lb.c -o $@ $(LIBS)

# lb.c is compiled once for every harness (instrumented, without libFuzzer's main)
fuzz/lb-fuzz.o: lb.c lb.h
	clang -g -O1 -fsanitize=fuzzer-no-link,address,undefined $(H2) -DLB_NO_MAIN -I. -c lb.c -o $@

fuzz/fuzz_%: fuzz/fuzz_%.c fuzz/lb-fuzz.o fuzz/fuzz_util.h
	clang -g -O1 -fsanitize=fuzzer,address,undefined -DLB_NO_MAIN -I. $< fuzz/lb-fuzz.o -o $@ $(LIBS)

fuzz/afl_%: fuzz/fuzz_%.c lb.c lb.h
	AFL_QUIET=1 afl-clang-fast -g -O1 $(H2) -DLB_NO_MAIN -I. $< lb.c -o $@ $(LIBS) -fsanitize=fuzzer

# the whole-connection harness #includes lb.c (its static functions, its syscalls shimmed): no lb-fuzz.o
fuzz/fuzz_conn: fuzz/fuzz_conn.c lb.c lb.h fuzz/fuzz_util.h
	clang $(WARN) -g -O1 -fsanitize=fuzzer,address,undefined $(H2) -DLB_NO_MAIN -DLB_POLL -I. $< -o $@ $(LIBS)

fuzz/afl_conn: fuzz/fuzz_conn.c lb.c lb.h fuzz/fuzz_util.h
	AFL_QUIET=1 afl-clang-fast $(WARN) -g -O1 $(H2) -DLB_NO_MAIN -DLB_POLL -I. $< -o $@ $(LIBS) -fsanitize=fuzzer

asan: lb-asan tests/unit-asan

# the same sources must also be clean under clang
check: lb.c lb.h
	clang $(WARN) -O2 $(H2) -c lb.c -o /dev/null
	clang $(WARN) -O2 $(H2) -DLB_POLL -c lb.c -o /dev/null
	clang $(WARN) -O2 -c lb.c -o /dev/null
	clang $(WARN) -O2 -DLB_POLL -c lb.c -o /dev/null
	clang $(WARN) -O2 -DLB_TLS_OPENSSL -c lb.c -o /dev/null
	clang $(WARN) -O2 $(H2) -DLB_TLS_OPENSSL -c lb.c -o /dev/null

deps:
	@bash tests/deps.sh run

deps-test:
	@bash tests/deps.sh test

deps-bench:
	@bash tests/deps.sh bench

run: deps lb
	@bash tests/demo.sh

test: deps-test
	$(MAKE) --no-print-directory lb lb-openssl lb-openssl-asan lb-poll lb-asan lb-static tests/unit tests/unit-asan check scaler scaler-check \
		$(addprefix fuzz/fuzz_,$(FUZZERS))
	@bash tests/run.sh

bench: deps-bench lb lb-openssl
	@bash tests/bench/run.sh

fuzz: deps-test
	@if [ "$(ENGINE)" = afl ]; then \
		bash tests/deps.sh afl && $(MAKE) --no-print-directory fuzz/afl_$(FUZZ) && \
		mkdir -p fuzz/out/$(FUZZ) && AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 timeout $(SECS) \
		afl-fuzz -i fuzz/corpus/$(FUZZ) -o fuzz/out/$(FUZZ) -x $(call fuzz_dict,$(FUZZ)) -- fuzz/afl_$(FUZZ) || true; \
	else \
		$(MAKE) --no-print-directory fuzz/fuzz_$(FUZZ) && mkdir -p fuzz/out/$(FUZZ) && \
		fuzz/fuzz_$(FUZZ) -max_total_time=$(SECS) -dict=$(call fuzz_dict,$(FUZZ)) fuzz/out/$(FUZZ) fuzz/corpus/$(FUZZ); \
	fi

# every harness under both engines, MINUTES each: fuzz/campaign.sh
fuzz-campaign: deps-test
	@bash tests/deps.sh afl
	$(MAKE) --no-print-directory $(addprefix fuzz/fuzz_,$(FUZZERS)) $(addprefix fuzz/afl_,$(FUZZERS))
	@bash fuzz/campaign.sh $(MINUTES) $(FUZZERS)

install: lb
	install -D -m 0755 lb $(DESTDIR)$(PREFIX)/bin/lb
	install -D -m 0644 config.ini $(DESTDIR)/etc/lb/config.ini.example

clean:
	rm -f lb lb-openssl lb-openssl-asan lb-poll lb-asan lb-static linode-scaler tests/unit tests/unit-asan $(addprefix fuzz/fuzz_,$(FUZZERS)) $(addprefix fuzz/afl_,$(FUZZERS)) fuzz/*.o *.o
	rm -rf fuzz/out

# linode-scaler: make scaler (rules in deploy/Makefile.scaler)
include deploy/Makefile.scaler
