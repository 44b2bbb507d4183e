"""Process groups: three participant tasks join the group "chat", wait until all three are in the
view, each send two lines, and read until they have all six; every participant saw the same lines in
the same order."""
import tether

PARTICIPANTS, LINES_EACH = 3, 2


# An async task: while it awaits, its worker still takes the group's events (a plain task that
# blocks in receive() would hold the worker's only request slot, and its events would never come).
@tether.remote
async def participant(who):
    # The with block leaves the group when the task is done (a worker outlives its task).
    with tether.Group("chat") as chat:
        async for item in chat:  # views first: wait until everyone is in
            if isinstance(item, tether.View) and len(item.members) == PARTICIPANTS:
                break
        for i in range(LINES_EACH):
            chat.send(f"{who}: line {i + 1}", order="agreed")
        seen = []
        async for item in chat:
            if isinstance(item, tether.Message):
                seen.append(item.data)
                if len(seen) == PARTICIPANTS * LINES_EACH:
                    return seen


def main():
    tether.init(num_cpus=PARTICIPANTS)
    names = ("ann", "bob", "cy")
    seen = tether.get([participant.remote(who) for who in names], timeout=120)
    for who, lines in zip(names, seen):
        print(f"{who} saw: {lines}")
    assert seen[0] == seen[1] == seen[2], "the participants disagree on the order"
    print("all three saw the same six lines in the same order")
    tether.shutdown()


if __name__ == "__main__":
    main()
