"""A stand-in trainer that follows the trainer contract (docs/architecture.md) in milliseconds.

It trains nothing. It prints the official log lines, writes a fake artifact that carries its
"true" score, writes RESULT_JSON, and in EVAL_ONLY=1 mode reads the artifact back and reports
that score. STUB_MODE (comma-separated) makes it misbehave in the ways real candidates do:

  crash_start  crash_mid  nan  hang  hang_term_ignore  spam  no_result  truncated_result
  lie_bytes  lie_bpb  no_artifact  rescore_crash  dump_env  grandchild  escape  probe_ancestors
  over_time  self_modify

Files it writes for the tests (in its working directory): stub_env.json (dump_env), stub_pids.json
(hang / grandchild / escape), stub_eval.json (EVAL_ONLY: what it could see), stub_ancestors.json.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

MODES = set(filter(None, os.environ.get("STUB_MODE", "ok").split(",")))
EVAL_ONLY = os.environ.get("EVAL_ONLY", "0") == "1"
RANK = int(os.environ.get("RANK", "0"))
RUN_ID = os.environ.get("RUN_ID", "stub")
ARTIFACT = os.environ.get("ARTIFACT_PATH", "final_model.int8.ptz")
RESULT = os.environ.get("RESULT_JSON")
STEPS = int(os.environ.get("STUB_STEPS", "6"))
STEP_S = float(os.environ.get("STUB_STEP_S", "0.01"))
MODEL_BYTES = int(os.environ.get("STUB_MODEL_BYTES", "1000"))
TRUE_BPB = float(os.environ.get("STUB_VAL_BPB", "1.23456789"))
TRUE_LOSS = TRUE_BPB * 1.6875

os.makedirs("logs", exist_ok=True)
_logf = open(f"logs/{RUN_ID}.txt", "a") if RANK == 0 else None


def log(msg):
    if RANK != 0:
        return
    print(msg, flush=True)
    _logf.write(msg + "\n")
    _logf.flush()


def write_json(name, obj):
    tmp = name + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, name)


def sleeper(new_session=False, ignore_term=False):
    code = "import signal, time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "time.sleep(1000)\n"
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=new_session)


def probe_ancestors():
    """Which ancestors' /proc/<pid>/environ can this process read, and does one hold OPENAI_API_KEY?"""
    readable, seen, pid = [], False, os.getppid()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                data = f.read()
            readable.append(pid)
            seen = seen or b"OPENAI_API_KEY=" in data
        except OSError:
            pass
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            pid = int(stat[stat.rfind(b")") + 2:].split()[1])
        except OSError:
            break
    return {"readable": readable, "secret_seen": seen}


def result_base():
    return {"device": "cpu", "world_size": int(os.environ.get("WORLD_SIZE", "1")), "seed": 1337,
            "torch_version": "stub", "peak_memory_mib": 12.5, "eval_stride": 0}


def eval_only():
    info = {"data_path": os.environ.get("DATA_PATH"), "data_listing": sorted(os.listdir(os.environ["DATA_PATH"])),
            "interfaces": sorted(name for _, name in socket.if_nameindex()), "home": os.environ.get("HOME")}
    writable = []
    for name in info["data_listing"]:
        try:
            with open(os.path.join(os.environ["DATA_PATH"], name), "ab") as f:
                f.write(b"tampered")
            writable.append(name)
        except OSError:
            pass
    info["writable"] = writable
    orig = os.environ.get("STUB_ORIG_DATA")
    if orig:
        try:
            info["orig_listing"] = sorted(os.listdir(orig))
        except OSError as e:
            info["orig_listing"] = f"error: {e}"
    if "probe_ancestors" in MODES:
        info["ancestors"] = probe_ancestors()
    if "dump_env" in MODES:
        write_json("stub_env.json", dict(os.environ))
    if RANK == 0:
        write_json("stub_eval.json", info)
    if "rescore_crash" in MODES:
        raise RuntimeError("stub: cannot load artifact (state_dict key mismatch)")
    with open(ARTIFACT, "rb") as f:
        score = json.loads(f.read().decode().strip())
    log(f"final_int8_zlib_roundtrip val_loss:{score['val_loss']:.4f} val_bpb:{score['val_bpb']:.4f} eval_time:1ms")
    log(f"final_int8_zlib_roundtrip_exact val_loss:{score['val_loss']:.8f} val_bpb:{score['val_bpb']:.8f}")
    if RANK == 0:
        write_json(RESULT, {**result_base(), "val_loss": score["val_loss"], "val_bpb": score["val_bpb"],
                            "pre_quant_val_loss": None, "pre_quant_val_bpb": None, "eval_only": True,
                            "eval_time_ms": 1.0, "steps": 0, "train_time_ms": 0})
    return 0


def train():
    if "dump_env" in MODES:
        write_json("stub_env.json", dict(os.environ))
    if "probe_ancestors" in MODES:
        write_json("stub_ancestors.json", probe_ancestors())
    if "self_modify" in MODES:
        with open(__file__, "a") as f:
            f.write("\n# modified\n")
    log(f"logs/{RUN_ID}.txt")
    log(f"train_loader:dataset:stub train_shards:{len(os.listdir(os.environ.get('DATA_PATH', '.')))}")
    if "crash_start" in MODES:
        raise RuntimeError("stub: bad config at start (NUM_HEADS must divide MODEL_DIM)")
    if "hang_term_ignore" in MODES:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pids = {"stub": os.getpid()}
    if "grandchild" in MODES or "hang" in MODES or "hang_term_ignore" in MODES:
        pids["grandchild"] = sleeper(ignore_term="hang_term_ignore" in MODES).pid
    if "escape" in MODES:
        pids["escaped"] = sleeper(new_session=True, ignore_term=True).pid
    if len(pids) > 1 and RANK == 0:
        write_json("stub_pids.json", pids)
    total, t0 = STEPS, time.time()
    log(f"step:0/{total} val_loss:{TRUE_LOSS + 3:.4f} val_bpb:{TRUE_BPB + 2:.4f} train_time:0ms step_avg:0.01ms")
    step = 0
    while True:
        step += 1
        if step > total and "spam" not in MODES:
            break
        time.sleep(STEP_S)
        ms = (time.time() - t0) * 1000
        if "nan" in MODES and step == 3:
            log("FAIL: non-finite loss at step 3 (train_loss=nan)")
            return 1
        if "crash_mid" in MODES and step == 3:
            raise ValueError("stub: shape mismatch in block 1 at step 3")
        if ("hang" in MODES or "hang_term_ignore" in MODES) and step == 3:
            time.sleep(1000)
        log(f"step:{step}/{max(total, step)} train_loss:{4.0 / step:.4f} train_time:{ms:.0f}ms"
            f" step_avg:{ms / step:.2f}ms")
        if step % 2 == 0 or step == total:
            bpb = TRUE_BPB + 1.0 / step
            log(f"step:{step}/{max(total, step)} val_loss:{bpb * 1.6875:.4f} val_bpb:{bpb:.4f}"
                f" train_time:{ms:.0f}ms step_avg:{ms / step:.2f}ms")
    train_ms = (time.time() - t0) * 1000
    if "over_time" in MODES:
        train_ms += 3_600_000
    log("peak memory allocated: 12 MiB reserved: 14 MiB")
    if RANK != 0:
        return 0
    if "no_artifact" not in MODES:
        payload = json.dumps({"val_loss": TRUE_LOSS, "val_bpb": TRUE_BPB}).encode()
        with open(ARTIFACT, "wb") as f:
            f.write(payload + b" " * max(0, MODEL_BYTES - len(payload)))
    with open(__file__, "rb") as f:
        code_bytes = len(f.read())
    model_bytes = MODEL_BYTES - (500 if "lie_bytes" in MODES else 0)
    claimed_bpb = TRUE_BPB - (0.05 if "lie_bpb" in MODES else 0.0)
    claimed_loss = claimed_bpb * 1.6875
    log(f"Serialized model int8+zlib: {model_bytes} bytes")
    log(f"Total submission size int8+zlib: {code_bytes + model_bytes} bytes")
    log(f"final_int8_zlib_roundtrip_exact val_loss:{claimed_loss:.8f} val_bpb:{claimed_bpb:.8f}")
    result = {**result_base(), "val_loss": claimed_loss, "val_bpb": claimed_bpb,
              "pre_quant_val_loss": claimed_loss - 0.01, "pre_quant_val_bpb": claimed_bpb - 0.006,
              "bytes_total": code_bytes + model_bytes, "bytes_code": code_bytes, "bytes_model": model_bytes,
              "steps": total, "train_time_ms": train_ms, "eval_time_ms": 2.0, "stopped_early": False,
              "val_history": [], "eval_only": False}
    if "no_result" in MODES:
        return 0
    if "truncated_result" in MODES:
        with open(RESULT, "w") as f:
            f.write(json.dumps(result)[:40])
        return 0
    write_json(RESULT, result)
    return 0


if __name__ == "__main__":
    sys.exit(eval_only() if EVAL_ONLY else train())
