# The two commands the README names: `make demo` and `make test`. Both bootstrap first
# (virtual environment, pinned packages, colcon build); the bootstrap skips work already done.
SHELL := /bin/bash
ARGS ?=
NAME ?=
RUN := scripts/run.sh

.PHONY: help bootstrap build demo test lint bench clean

help:
	@echo "make demo                  run the simulated self-improvement loop (bootstraps first)"
	@echo "make test [ARGS='-k x']    lint with ruff, then run the whole pytest suite"
	@echo "make bench NAME=<script> [ARGS='--quick']   run bench/<script>.py"
	@echo "make bootstrap             only set up .venv and build the colcon workspace"
	@echo "make clean                 remove build/, install/, log/ (keeps .venv)"

bootstrap:
	@scripts/bootstrap.sh

build: bootstrap

demo: bootstrap
	@$(RUN) python -m sarm2_bringup.demo $(ARGS)

lint: bootstrap
	@$(RUN) ruff check .

test: lint
	@$(RUN) python -m pytest $(ARGS)

bench: bootstrap
	@test -n "$(NAME)" || { echo "usage: make bench NAME=<script in bench/> [ARGS='--quick']"; exit 2; }
	@test -f "bench/$(NAME).py" || { echo "no bench/$(NAME).py; have: $$(ls bench/*.py | xargs -n1 basename)"; exit 2; }
	@$(RUN) python bench/$(NAME).py $(ARGS)

clean:
	rm -rf build install log
