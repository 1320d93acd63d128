# Two commands for a fresh machine:  `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo lint test test-oldest bench bench-memory venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# The demo needs the package (TensorFlow, Keras, NumPy) and matplotlib for its PNGs: nothing else.
$(DEMO_STAMP): pyproject.toml Makefile | $(PY)
	@echo "Installing keras-unroll with TensorFlow, Keras, NumPy and matplotlib into $(VENV)/"
	@echo "(the first time this downloads TensorFlow, several hundred MB: a few minutes)."
	$(PIP) install --progress-bar on -e ".[plot]"
	touch $@

# The tests also need pytest & co. and tf-keras, whose minor version must match TensorFlow's
# (it provides TF1's cells for the parity tests).
$(TEST_STAMP): $(DEMO_STAMP)
	@echo "Installing the test tools (pytest, pytest-xdist, pytest-timeout, hypothesis, ruff, mypy) and tf-keras into $(VENV)/"
	$(PIP) install --progress-bar on -e ".[test,plot]"
	$(PIP) install --progress-bar on "tf-keras==$$($(PY) -c 'import importlib.metadata as m; print(".".join(m.version("tensorflow").split(".")[:2]))').*"
	touch $@

venv: $(TEST_STAMP)

# DEMO_ARGS passes options, e.g. `make demo DEMO_ARGS=--quick`; the PNG in the README is demo-output/'s.
demo: $(DEMO_STAMP)
	$(VENV)/bin/keras-unroll demo $(DEMO_ARGS)

# ruff's lint rules and formatting, and mypy's types (configured in pyproject.toml); `make test` runs them first.
lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m mypy

# Three pytest-xdist workers on CI's two cores: with two, the cores were idle part of the time (a worker
# waiting for its children or the disk, one worker done before the other). On a fresh clone (`CI=true bash .ci/run`):
# 8:35 of pytest with -n 2, 7:55 with -n 3.
test: $(TEST_STAMP) lint
	$(PY) -m pytest -n 3 --dist loadfile

# The oldest TensorFlow/Keras pair pyproject.toml admits (TF 2.16, Keras 3.8), in a venv of its own, runs a smoke
# subset of the tests (OLDEST_TESTS): the README's code and the docstring examples, the layers, TF1's functions and
# cells against TF1 itself (tf-keras 2.16 in a child process), the fused SimpleRNN/LSTM/GRU kernels against Keras and
# the generic path (GRU with recurrent dropout: its maths changed in Keras 3.8), the private accesses and the version
# check. TF 2.16's wheels need NumPy < 2, which pip resolves from TensorFlow's own requirements (NumPy 1.26).
# Measured on 2 cores shared with other work (a fresh clone, no pip cache): the install 1:45, the subset 5:30.
# Tests are named by function (all its parameters): when one is renamed, pytest stops with "not found" rather than
# running less without a word.
OLDEST_VENV  ?= .venv-oldest
OLDEST_PY    := $(OLDEST_VENV)/bin/python
OLDEST_STAMP := $(OLDEST_VENV)/.installed-oldest
OLDEST_TESTS := \
	tests/test_architecture.py::test_versions_older_than_the_tested_pair_are_refused_by_name \
	tests/test_architecture.py::test_the_door_tells_xla_graphs_apart \
	tests/test_architecture.py::test_the_door_list_ops_read_and_differentiate_as_a_tensor_array \
	tests/test_readme.py::test_readme_python_block_runs_as_pasted \
	tests/test_readme.py::test_docstring_examples_pass \
	tests/test_layers.py \
	tests/test_keras_dropin.py::test_mask_backwards_state_and_gradients_match_keras_rnn \
	tests/test_keras_dropin.py::test_dropout_with_the_same_seed_matches_keras \
	tests/test_keras_dropin.py::test_stateful_runs_over_batches_with_resets_match_keras \
	tests/test_tf1_functions.py::test_float64_matches_tf1 \
	tests/test_tf1_functions.py::test_raw_rnn_matches_tf1 \
	tests/test_tf1_functions.py::test_a_subclass_of_tf1s_rnncell \
	tests/test_tf1_functions.py::test_tf1_style_cells_in_every_function \
	tests/test_tf1_functions.py::test_a_concatenated_stack_state_in_and_out \
	tests/test_tf1_functions.py::test_no_steps_return_the_initial_state_as_tf1 \
	tests/test_tf1_functions.py::test_load_raw_variables_by_name \
	tests/test_tf1_cells.py::test_outputs_states_and_gradients_match_tf1 \
	tests/test_tf1_cells.py::test_concat_of_a_stacks_states_is_batch_by_total_units \
	tests/test_tf1_cells.py::test_lstm_state_tuple_initial_state_is_read_as_c_then_h \
	tests/test_tf1_cells.py::test_layers_keep_keras_flat_states_with_tf1_numbers \
	tests/test_tf1_cells.py::test_dropout_masks_per_step_or_per_sequence_scaled_and_only_in_training \
	tests/test_tf1_cells.py::test_per_sequence_masks_reach_cells_inside_wrappers \
	tests/test_tf1_cells.py::test_state_dropout_drops_an_lstms_h_but_not_its_c \
	tests/test_fast_paths.py::test_fast_path_eligibility \
	tests/test_fast_paths.py::test_fused_matches_keras_simple_rnn \
	tests/test_fast_paths.py::test_hoisted_gated_cells_match_keras \
	tests/test_fast_paths.py::test_hoisted_gru_dropout_matches_generic \
	tests/test_fast_paths.py::test_fused_dropout_uses_the_generic_masks \
	tests/test_fast_paths.py::test_functions_take_the_fused_path \
	tests/test_fast_paths.py::test_last_output_only_matches_generic_path \
	tests/test_fast_paths.py::test_second_order_through_the_xla_loop_raises_a_clear_error \
	tests/test_gated_kernels.py::test_eligibility \
	tests/test_gated_kernels.py::test_dropout_masks_match_keras_for_the_same_seed \
	tests/test_gated_kernels.py::test_mask_go_backwards_initial_state_match_keras_and_generic \
	tests/test_gated_kernels.py::test_inference_projects_inside_the_compiled_loop_and_matches_keras \
	tests/test_gated_kernels.py::test_gradient_of_a_function_traced_without_a_tape \
	tests/test_gated_kernels.py::test_inference_differentiated_later_matches_the_training_path \
	tests/test_gated_kernels.py::test_tf1_lstm_cell_without_peepholes_runs_the_fused_kernels_with_keras_numbers

$(OLDEST_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(OLDEST_VENV)
	@echo "Installing TensorFlow 2.16, Keras 3.8 and tf-keras 2.16 (the oldest supported pair) into $(OLDEST_VENV)/"
	$(OLDEST_PY) -m pip --disable-pip-version-check install --progress-bar off \
		-e . "tensorflow==2.16.*" "keras==3.8.*" "tf-keras==2.16.*" "pytest>=7" pytest-timeout "hypothesis>=6"
	touch $@

test-oldest: $(OLDEST_STAMP)
	$(OLDEST_PY) -c 'import tensorflow as tf, keras; print("TensorFlow", tf.__version__, "Keras", keras.__version__)'
	$(OLDEST_PY) -m pytest -p no:cacheprovider -o addopts="-ra --strict-markers --strict-config --durations=5" \
		$(OLDEST_TESTS)

bench: $(DEMO_STAMP)
	$(PY) -m benchmarks

bench-memory: $(DEMO_STAMP)
	$(PY) -m benchmarks memory

clean:
	rm -rf $(VENV) $(OLDEST_VENV) demo-output bench-output
